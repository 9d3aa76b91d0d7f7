"""Classifies chest X-ray images with a run's best saved backbone and head, and shows why with a heatmap.

    python -m benchmark.predict RESULTS_DIR IMAGE_OR_FOLDER [--backbone NAME] [--out DIR] [--weights DIR]

Prints each image's class probabilities (and, for the first task, whether the
disease probability passes the run's validation-chosen operating threshold)
and writes one heatmap overlay PNG per image plus ``predictions.csv`` into
``--out``: ``NAME_METHOD.png`` for ``IMAGE_OR_FOLDER/SUB/NAME.EXT`` lands in
``--out/SUB/``, one file per image (two images of a folder with the same name
but another suffix keep theirs: ``NAME_EXT_METHOD.png``). ``--out`` may never
be a run's folder nor one of the folders a run writes: predict never writes
over a run's files.

The answer comes from exactly the run's files: the backbone's weights file
must have the SHA-256 the run recorded (``leaderboard.csv``), and each head
checkpoint must be whole, or predict stops in one line saying which file and
what to do.

The heatmap is Grad-CAM. For a GlobalAveragePooling -> [Standardize] ->
Dropout -> Dense head the gradient of a class logit with respect to the last
feature map is the same at every position: ``W[k, c] / (std[k] * H * W)``.
So Grad-CAM is computed exactly from the head's weights, with no automatic
differentiation, on every Keras backend. ``--method occlusion`` instead
greys out patches and records how much the class probability drops. It needs
forward passes only, so it works for any model.

The run's ensemble (``--backbone ensemble``, and the default where the run has
one) answers with the mean of its members' probabilities, each member reading
the image at its own size as the run did, and draws the mean of the members'
heatmaps, each upsampled to the largest member size.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import count
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from backbones import (  # noqa: E402
    BACKBONES,
    INT8,
    BackboneSpec,
    build_backbone,
    get_backbone,
    keras_build_precision,
    resolve_weights,
)
from backbones.weights import WeightsSource, WeightsUnavailableError  # noqa: E402
from benchmark.config import RunConfig  # noqa: E402
from benchmark.evaluation.verdict import ENSEMBLE  # noqa: E402
from benchmark.run_folder import (  # noqa: E402
    GRID_CSV,
    LEADERBOARD_CSV,
    MARKERS,
    PREDICTIONS_CSV,
    READ_FILES,
    REPORT_JSON,
    RESULT_FILE,
    RUN_JSON,
    SUBFOLDERS,
    WEIGHTS_FILE,
    RunFolder,
    RunInfo,
    is_finetuned,
    split_model_name,
)
from benchmark.settings import HEAD_GRID_FIELDS, GridKey, HeadSettings, model_name  # noqa: E402
from benchmark.training.finetune import build_finetuned  # noqa: E402
from benchmark.training.heads import checkpoint_is_whole, is_multi_label, load_head  # noqa: E402
from common.files import DamagedFileError, atomic_output, check_checksums, sha256_file  # noqa: E402
from features.data.audit import image_problem  # noqa: E402
from features.data.dataset import IMAGE_SUFFIXES, name_problem, printable  # noqa: E402
from features.data.dicom import is_dicom  # noqa: E402
from features.data.images import UnreadableImageError, load_image  # noqa: E402
from features.data.records import Label  # noqa: E402
from features.extract import openvino_ir_file, padded_forward  # noqa: E402
from features.quantize import int8_ir  # noqa: E402
from features.runtime import Forward, RuntimeUnavailableError, build_forward  # noqa: E402
from features.settings import Calibration, DicomSettings  # noqa: E402

METHODS = ("auto", "gradcam", "occlusion")
RERUN = "run the same run command again (finished work is reused)"


class RunFilesError(ValueError):
    """A file the answer needs is not the run's, or is damaged or missing: other weights, a damaged checkpoint, a
    damaged ``run.json``, or an output that would land on a run's files. Its message is one line: which file, and
    what to do."""


@dataclass(frozen=True)
class SkippedImage:
    """An image ``predict_image`` leaves out, as the run would have: its path, and why (the run's own words)."""

    path: Path
    reason: str


@dataclass
class Predictor:
    """A backbone that returns its last feature map and pooled features, and the head on top."""

    spec: BackboneSpec
    image_size: int
    classes: tuple[str, ...]
    backbone: keras.Model
    head: keras.Model
    head_id: str
    description: str
    run: RunInfo
    # The run's own runtime for the pooled features the head reads, where it was not Keras (OpenVINO): the
    # probabilities are then the run's. The feature maps of the heatmaps come from ``backbone`` (Keras).
    pooled_forward: Callable[[np.ndarray], np.ndarray] | None = None
    # The LayerNormalization between the feature map's mean and the head, where the backbone has one (ConvNeXt).
    pooled_norm: keras.layers.LayerNormalization | None = None
    dicom: DicomSettings = DicomSettings()  # how the run windowed DICOM files: an image is read alike (run_dicom)

    def feature_map_size(self) -> tuple[int, int]:
        """Height and width of the last feature map: Grad-CAM's resolution."""
        return tuple(int(v) for v in self.backbone.outputs[0].shape[1:3])

    @property
    def multi_label(self) -> bool:
        """Whether the head gives one sigmoid per finding rather than a softmax over classes."""
        return is_multi_label(self.head)

    @property
    def label(self) -> str:
        """The model in a few words, for a heatmap's title."""
        return f"{self.spec.name} {self.image_size} px"

    def heatmap_method(self, method: str) -> str:
        """``auto``: Grad-CAM unless the feature map is below 3x3 (too coarse to point at anything)."""
        if method != "auto":
            return method
        return "gradcam" if min(self.feature_map_size()) >= 3 else "occlusion"

    def heatmap_text(self, method: str) -> str:
        """The heatmap ``method`` (resolved) and the resolution it has, in words."""
        height, width = self.feature_map_size()
        return f"{method} (last feature map {height}x{width})"

    def answer(self, path: Path, image: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities of ``image`` (the file ``path`` decoded at ``image_size``) and the ``method``
        heatmap of the likeliest class."""
        probabilities = self.probabilities(image[None])[0]
        return probabilities, self.heatmap(image, int(np.argmax(probabilities)), method)

    def heatmap(self, image: np.ndarray, class_index: int, method: str) -> np.ndarray:
        """``class_index``'s heatmap on ``image`` by ``method`` (``gradcam`` or ``occlusion``), in [0, 1]."""
        return (self.gradcam if method == "gradcam" else self.occlusion)(image, class_index)

    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(feature maps (n, h, w, k), pooled (n, k))`` of uint8 RGB ``images``."""
        feature_map, pooled = self.backbone.predict_on_batch(self.spec.preprocess(images.astype(np.float32)))
        return keras.ops.convert_to_numpy(feature_map), keras.ops.convert_to_numpy(pooled)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """``(n, n_classes)`` class probabilities of uint8 RGB ``images``."""
        pooled = self.features(images)[1] if self.pooled_forward is None else self.pooled_forward(images)
        return keras.ops.convert_to_numpy(self.head.predict_on_batch(pooled))

    def gradcam(self, image: np.ndarray, class_index: int) -> np.ndarray:
        """Grad-CAM of ``class_index``'s logit on the last feature map, in [0, 1], shape ``(h, w)``."""
        feature_map, _ = self.features(image[None])
        return gradcam_from_head(feature_map[0], self.head, class_index, self.pooled_norm)

    def occlusion(self, image: np.ndarray, class_index: int, patch: int | None = None, batch: int = 32) -> np.ndarray:
        """Drop in ``class_index``'s probability when each patch is greyed out, in [0, 1]."""
        size = image.shape[0]
        patch = patch or max(size // 7, 4)
        stride = max(patch // 2, 1)
        starts = list(range(0, size - patch + 1, stride))
        base = self.probabilities(image[None])[0, class_index]
        occluded = []
        for top in starts:
            for left in starts:
                copy = image.copy()
                copy[top : top + patch, left : left + patch] = 128
                occluded.append(copy)
        drops = np.concatenate(
            [base - self.probabilities(np.stack(occluded[i : i + batch]))[:, class_index]
             for i in range(0, len(occluded), batch)]
        )  # fmt: skip
        heat = np.zeros((size, size))
        hits = np.zeros((size, size))
        for (top, left), drop in zip([(t, s) for t in starts for s in starts], drops, strict=True):
            heat[top : top + patch, left : left + patch] += drop
            hits[top : top + patch, left : left + patch] += 1
        return _unit(np.maximum(heat / np.maximum(hits, 1), 0))


@dataclass
class EnsemblePredictor:
    """The run's ensemble: its members' predictors, and the mean of their probabilities and heatmaps.

    Each member reads the image at its own size, as the run's features did, so the probabilities are the
    run's ``ensemble`` rows. The heatmap is drawn on the image at the largest member size.
    """

    members: list[Predictor]
    names: list[str]  # the members' model names, as the leaderboard has them
    head_id: str
    run: RunInfo
    dicom: DicomSettings = DicomSettings()  # as Predictor.dicom

    @property
    def classes(self) -> tuple[str, ...]:
        """The run's classes (every member has the same)."""
        return self.members[0].classes

    @property
    def image_size(self) -> int:
        """The size the image is checked, shown and its heatmap drawn at: the largest member's."""
        return max(member.image_size for member in self.members)

    @property
    def multi_label(self) -> bool:
        """Whether the members give one sigmoid per finding (the run's labels decide, so all do or none)."""
        return self.members[0].multi_label

    @property
    def label(self) -> str:
        """The model in a few words, for a heatmap's title."""
        return f"ensemble of {len(self.members)}"

    @property
    def description(self) -> str:
        """What the ensemble averages, member by member."""
        members = "; ".join(f"{name}: {member.description}" for name, member in zip(self.names, self.members,
                                                                                     strict=True))  # fmt: skip
        return (f"ensemble, the mean of {len(self.members)} models' probabilities, each at its own image size "
                f"({members}); heatmap: the mean of the members' heatmaps")  # fmt: skip

    def feature_map_size(self) -> tuple[int, int]:
        """The coarsest member's last feature map: what decides ``auto``."""
        return min((member.feature_map_size() for member in self.members), key=lambda size: size[0] * size[1])

    def heatmap_method(self, method: str) -> str:
        """``auto``: Grad-CAM where every member's feature map allows it, else occlusion for all (it works for any
        model), so that the members' maps mean the same thing."""
        if method != "auto":
            return method
        methods = {member.heatmap_method(method) for member in self.members}
        return "gradcam" if methods == {"gradcam"} else "occlusion"

    def heatmap_text(self, method: str) -> str:
        """The heatmap ``method`` and the members' resolutions, in words."""
        sizes = ", ".join("{}x{}".format(*member.feature_map_size()) for member in self.members)
        return f"{method}, the mean of the members' (last feature maps {sizes})"

    def answer(self, path: Path, image: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
        """The mean of the members' probabilities, each member reading ``path`` at its own size (``image`` is it
        at ``image_size``), and the mean of their ``method`` heatmaps of the likeliest class, upsampled."""
        images = [image if member.image_size == self.image_size else load_image(path, member.image_size, member.dicom)
                  for member in self.members]  # fmt: skip
        probabilities = np.mean([member.probabilities(one[None])[0]
                                 for member, one in zip(self.members, images, strict=True)], axis=0)  # fmt: skip
        top = int(np.argmax(probabilities))
        heats = [upsample(member.heatmap(one, top, method), self.image_size)
                 for member, one in zip(self.members, images, strict=True)]  # fmt: skip
        return probabilities, _unit(np.mean(heats, axis=0))


# What load_predictor returns and predict_image takes: one head, or the ensemble.
AnyPredictor = Predictor | EnsemblePredictor


def _unit(heat: np.ndarray) -> np.ndarray:
    """``heat`` scaled to a maximum of 1 (unchanged where it is all zero)."""
    return heat / heat.max() if heat.max() > 0 else heat


def upsample(heat: np.ndarray, size: int) -> np.ndarray:
    """A heatmap of any resolution, bilinearly resized to ``(size, size)``."""
    resized = Image.fromarray(np.asarray(heat, dtype=np.float32)).resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float64), 0, 1)


def gradcam_from_head(feature_map: np.ndarray, head: keras.Model, class_index: int,
                      norm: keras.layers.LayerNormalization | None = None) -> np.ndarray:  # fmt: skip
    """Grad-CAM of a GlobalAveragePooling -> [LayerNormalization] -> [Standardize] -> Dropout -> Dense head, exactly.

    The class logit is ``sum_k W[k, c] * (mean_ij A[i, j, k] - mu[k]) / s[k] + b[c]``, so its gradient
    with respect to ``A[i, j, k]`` is ``W[k, c] / (s[k] * h * w)`` everywhere: Grad-CAM's channel
    weights. With ``norm`` (ConvNeXt's LayerNormalization of the pooled features) that gradient is carried back
    through the normalisation at this image's pooled features (``layer_norm_gradient``): still the same at every
    position. The map is ``ReLU(sum_k weight[k] * A[:, :, k])``, scaled to [0, 1].
    """
    dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)][-1]
    kernel = keras.ops.convert_to_numpy(dense.kernel)[:, class_index].astype(np.float64)
    std = np.ones_like(kernel)
    for layer in head.layers:
        if hasattr(layer, "std_values"):
            std = np.asarray(layer.std_values, dtype=np.float64)
    height, width = feature_map.shape[:2]
    weights = kernel / std
    if norm is not None:
        weights = layer_norm_gradient(feature_map.astype(np.float64).mean(axis=(0, 1)), norm, weights)
    weights = weights / (height * width)
    return _unit(np.maximum(np.tensordot(feature_map.astype(np.float64), weights, axes=([2], [0])), 0))


def layer_norm_gradient(pooled: np.ndarray, norm: keras.layers.LayerNormalization, upstream: np.ndarray) -> np.ndarray:
    """The gradient with respect to ``pooled`` of ``upstream . norm(pooled)``, for a LayerNormalization over the
    channels: ``(u - mean(u) - x_hat * mean(u * x_hat)) / sigma`` with ``u = gamma * upstream``."""
    centred = pooled - pooled.mean()
    sigma = np.sqrt(np.mean(centred**2) + norm.epsilon)
    scaled = centred / sigma
    gamma = keras.ops.convert_to_numpy(norm.gamma).astype(np.float64) if norm.scale else 1.0
    u = upstream * gamma
    return (u - u.mean() - scaled * np.mean(u * scaled)) / sigma


def _classes(results_dir: Path, run: RunInfo) -> tuple[str, ...]:
    """The run's classes, from ``predictions.csv``'s columns in runs that did not record them."""
    if run.classes is not None:
        return tuple(run.classes)
    header = pd.read_csv(RunFolder(results_dir).file(PREDICTIONS_CSV), nrows=0).columns
    return tuple(column[2:] for column in header if column.startswith("p_"))


def choose_head(results_dir: Path, backbone: str | None = None, ensemble_allowed: bool = True) -> pd.Series:
    """The leaderboard row of the model ``backbone`` names, or by default the run's ensemble where it has one of
    frozen heads only (and ``ensemble_allowed``), else its best selected head: by the run's validation selection
    score, first seed.

    Never by a test score: the choice is the same whatever the test split says (the ensemble's members are
    chosen on validation too). ``backbone`` "ensemble" without one raises ``ValueError`` saying why.
    """
    board = pd.read_csv(RunFolder(results_dir).file(LEADERBOARD_CSV)).drop_duplicates("head_id")
    ensemble = board[board["backbone"] == ENSEMBLE]
    if backbone is not None and backbone.lower() == ENSEMBLE:
        if ensemble.empty:
            raise ValueError(f"{results_dir} has no ensemble: {_no_ensemble_reason(results_dir)}")
        return ensemble.iloc[0]
    if (backbone is None and ensemble_allowed and not ensemble.empty
            and not _has_finetuned_member(board, ensemble.iloc[0]["head_id"])):  # fmt: skip
        return ensemble.iloc[0]
    grid = pd.read_csv(RunFolder(results_dir).file(GRID_CSV))
    # The grid names the backbone; the leaderboard names the model (backbone-logreg for a probe).
    grid["backbone"] = [model_name(b, k) for b, k in zip(grid["backbone"], grid["kind"], strict=True)]
    keys = list(GridKey._fields)
    heads = board[board["backbone"] != ENSEMBLE].merge(grid[[*keys, "selection_score"]], on=keys, how="left")
    if backbone is None:
        heads = heads[~heads["backbone"].map(is_finetuned)]  # fine-tuned models only when asked for
    else:
        base, suffix = split_model_name(backbone)
        name = get_backbone(base).name + suffix
        heads = heads[heads["backbone"] == name]
        if heads.empty:
            present = ", ".join(board["backbone"].unique())
            raise ValueError(f"{results_dir} has no selected head for {name}; it has {present}")
    best = heads.sort_values(["selection_score", "seed"], ascending=[False, True], kind="mergesort").iloc[0]
    return best


def ensemble_head_ids(head_id: str) -> list[str]:
    """The members' head ids in an ensemble's head id (``ensemble:ID1+ID2+...``, as ``make_ensemble`` writes it)."""
    return head_id.removeprefix(f"{ENSEMBLE}:").split("+")


def ensemble_members(board: pd.DataFrame, head_id: str) -> pd.DataFrame:
    """The leaderboard rows (one each) of the members of the ensemble ``head_id``, in its order.

    Raises ``ValueError`` naming a member the leaderboard lacks."""
    rows = board.drop_duplicates("head_id").set_index("head_id", drop=False)
    members = ensemble_head_ids(head_id)
    if missing := [member for member in members if member not in rows.index]:
        raise ValueError(f"the ensemble's member {missing[0]} is not in {LEADERBOARD_CSV}")
    return rows.loc[members]


def _has_finetuned_member(board: pd.DataFrame, head_id: str) -> bool:
    """Whether the ensemble ``head_id`` averages a fine-tuned model: then not the default, as fine-tuned models
    are used only when asked for."""
    return any(is_finetuned(name) for name in ensemble_members(board, head_id)["backbone"])


def _no_ensemble_reason(results_dir: Path) -> str:
    """Why a run has no ensemble row, from its ``report.json``."""
    path = RunFolder(results_dir).file(REPORT_JSON)
    if not path.is_file():
        return f"it has no {REPORT_JSON} (a run made before ensembles)"
    chosen = json.loads(path.read_text(encoding="utf-8")).get("data", {}).get("ensemble")
    if chosen is None:
        return f"its {REPORT_JSON} does not choose one (a run made before ensembles)"
    return (f"on validation, no other head is tied with the best one ({chosen['validation_best']}), so there is "
            "nothing to average")  # fmt: skip


def load_predictor(results_dir: str | Path, backbone: str | None = None, weights: str | None = None,
                   cache: dict[str, Predictor] | None = None) -> AnyPredictor:  # fmt: skip
    """Rebuild the model ``choose_head`` picks: its backbone (same weights and seed as its features) with its saved
    head, or each member of the ensemble so.

    ``cache`` (head id -> ``Predictor``) keeps the heads built, for a caller that predicts again (a server): an
    ensemble then shares its members with the single models."""
    results_dir = Path(results_dir)
    run = read_run(results_dir)
    row = choose_head(results_dir, backbone)
    cache = {} if cache is None else cache
    if row["backbone"] != ENSEMBLE:
        return _cached_head(results_dir, run, row, weights, cache)
    members = ensemble_members(pd.read_csv(RunFolder(results_dir).file(LEADERBOARD_CSV)), row["head_id"])
    heads = [_cached_head(results_dir, run, member, weights, cache) for _, member in members.iterrows()]
    return EnsemblePredictor(heads, list(members["backbone"]), row["head_id"], run, run_dicom(run))


def _cached_head(results_dir: Path, run: RunInfo, row: pd.Series, weights: str | None,
                 cache: dict[str, Predictor]) -> Predictor:  # fmt: skip
    """``load_head_predictor`` of ``row``, or the one ``cache`` already holds for its head id."""
    if row["head_id"] not in cache:
        cache[row["head_id"]] = load_head_predictor(results_dir, run, row, weights)
    return cache[row["head_id"]]


def load_head_predictor(results_dir: Path, run: RunInfo, row: pd.Series, weights: str | None = None,
                        as_run: bool = True) -> Predictor:  # fmt: skip
    """Rebuild the backbone of one leaderboard ``row`` (same weights and seed as its features) with its saved head.

    ``as_run`` False builds the backbone in Keras float32 whatever runtime and precision the run computed its
    features with (an export's graph), rather than as the run did.

    Raises ``RunFilesError`` where the weights are not the run's (``run_weights``) or a checkpoint is damaged."""
    spec = get_backbone(split_model_name(row["backbone"])[0])
    size = int(row["image_size"])
    config = RunConfig.from_json(run.config)
    weights, source = run_weights(spec, size, config, row, weights)
    folder = RunFolder(results_dir)
    if is_finetuned(row["backbone"]):
        record = finetuned_record(folder.finetuned(row["head_id"]))
        head = _loaded_head(folder.checkpoint(record["from_head"]))
        model, pooled_model = build_finetuned(spec, size, weights, config.seed, head)
        # The record's SHA-256 matched these bytes, so a failure here is a file of another format or version.
        _loading(folder.finetuned(row["head_id"]) / WEIGHTS_FILE, model.load_weights)  # backbone and head, tuned
        pooled_forward = None  # fine-tuning trains and evaluates in Keras
    else:
        # Where and in which type the features were computed (run.json): --precision/--runtime auto resolved them.
        plan = run.compute_plan()
        own = plan.for_backbone(spec.name, size)
        precision = own.precision.value if as_run else "float32"
        head = _loaded_head(folder.checkpoint(row["head_id"]))  # checked before seconds of build
        pooled_model = build_backbone(spec, size, source, seed=config.seed, precision=keras_build_precision(precision))
        runtime = own.runtime.value if as_run else "keras"
        pooled_forward = run_runtime_forward(runtime, config, spec, source, size, precision, plan.calibration)
    pooling, norm = pooled_layers(spec, pooled_model)
    backbone_model = keras.Model(pooled_model.inputs, [pooling.input, pooled_model.outputs[0]])
    settings = HeadSettings(**{name: row[name] for name in HEAD_GRID_FIELDS})
    description = (
        f"{spec.name} {size} px, {settings.describe()}, seed {row['seed']}, "
        f"weights {row['weights'] if is_finetuned(row['backbone']) else source.identity}"
    )
    return Predictor(spec, size, _classes(results_dir, run), backbone_model, head, row["head_id"], description, run,
                     pooled_forward, norm, run_dicom(run))  # fmt: skip


def pooled_layers(spec: BackboneSpec, pooled_model: keras.Model) -> tuple[keras.layers.Layer,
                                                                         keras.layers.Layer | None]:  # fmt: skip
    """``(the GlobalAveragePooling2D, the LayerNormalization after it or None)`` at the end of ``pooled_model``:
    where Grad-CAM's feature map is, and what stands between its mean and the head (ConvNeXt normalises its pooled
    features). ``ValueError`` naming the layers for any other ending."""
    last = pooled_model.layers[-1]
    norm = last if isinstance(last, keras.layers.LayerNormalization) and not last.rms_scaling else None
    pooling = pooled_model.layers[-2] if norm is not None else last
    if not isinstance(pooling, keras.layers.GlobalAveragePooling2D):
        ending = " -> ".join(type(layer).__name__ for layer in pooled_model.layers[-2:])
        raise ValueError(f"{spec.name}: the network ends in {ending}, not GlobalAveragePooling2D (optionally followed "
                         f"by LayerNormalization)")  # fmt: skip
    return pooling, norm


def read_run(results_dir: str | Path) -> RunInfo:
    """The run's ``run.json`` (any version); ``RunFilesError`` naming the file when it is damaged or not a run's
    record."""
    path = RunFolder(results_dir).run_json
    try:
        run = RunFolder(results_dir).info()
        RunConfig.from_json(run.config)  # the settings predict rebuilds the model with must be readable
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise RunFilesError(f"{path} is damaged or not a cxr-bench run record ({type(error).__name__}: {error}); "
                            f"{RERUN}: it writes {RUN_JSON} anew") from None  # fmt: skip
    # The top-level files predict and the web page read are checked against SHA256SUMS before use.
    check_run_files(Path(results_dir), [name for name in READ_FILES if (Path(results_dir) / name).is_file()])
    return run


def _as_summed(results_dir: Path, path: Path) -> bool:
    """Whether ``path`` has the bytes the run's ``SHA256SUMS`` lists for it (True for runs before it)."""
    try:
        check_checksums(results_dir, [path.relative_to(results_dir).as_posix()])
    except DamagedFileError:
        return False
    return True


def check_run_files(results_dir: Path, names: list[str]) -> None:
    """``RunFilesError`` where one of ``names`` differs from the run's ``SHA256SUMS`` (runs before it: no check)."""
    try:
        check_checksums(results_dir, names)
    except DamagedFileError as damage:
        raise RunFilesError(f"{damage}; {RERUN}: it writes the reports anew") from None


def _recorded_weights(row: pd.Series) -> str | None:
    """The identity of the weights the run's features (or fine-tuning) started from, as the leaderboard records
    it (``file:SHA256``, ``imagenet:FILE``, ``random-init:seed=N``); None on a row that records none."""
    value = row.get("weights")
    return value.split(";")[0].strip() if isinstance(value, str) and value else None


def _named(identity: str) -> str:
    return f"SHA-256 {identity.removeprefix('file:')}" if identity.startswith("file:") else identity


def run_weights(spec: BackboneSpec, size: int, config: RunConfig, row: pd.Series,
                override: str | None = None) -> tuple[str, WeightsSource]:  # fmt: skip
    """``(--weights value, resolved source)`` of the weights the leaderboard ``row`` was made with: ``override``
    (``--weights``), else the run's own (a relative path is read from here); ``RunFilesError`` where they
    cannot be found or are not the run's.

    A weights file must have the SHA-256 the run recorded. Where the run used ImageNet, a folder holding Keras'
    file is accepted unchecked (the run recorded Keras' file name, not its hash)."""
    given = override or config.weights
    recorded = _recorded_weights(row)
    try:
        source = resolve_weights(spec, given, size, seed=config.seed)
    except WeightsUnavailableError as error:
        raise RunFilesError(_missing_weights(spec, given, override, recorded, error)) from None
    if recorded is None or source.identity == recorded:
        return given, source
    if recorded.startswith("imagenet:") and source.kind == "file":
        return given, source
    found = f"{source.path.resolve()} ({_named(source.identity)})" if source.path else source.identity
    origin = f"--weights {override}" if override else f"the weights folder run.json records ({given})"
    way = ("pass --weights DIR, the folder holding the run's weights file" if recorded.startswith("file:")
           else "leave out --weights: the run's weights are had without a folder")  # fmt: skip
    raise RunFilesError(f"{spec.name}: the weights from {origin} are not the run's: {found} here, the run's "
                        f"{_named(recorded)} ({LEADERBOARD_CSV}); {way}")  # fmt: skip


def _missing_weights(spec: BackboneSpec, given: str, override: str | None, recorded: str | None,
                     error: WeightsUnavailableError) -> str:  # fmt: skip
    """Why the weights cannot be had, in one line, and the way out: ``--weights DIR``."""
    wanted = f"the run's {spec.name} weights ({_named(recorded)})" if recorded else f"the run's {spec.name} weights"
    if override:
        return f"--weights {override}: {error}; pass the folder holding {wanted}"
    if not Path(given).is_dir():
        relative = "" if Path(given).is_absolute() else ", a path relative to the folder the run was started in"
        return (f"the run's weights folder {given} ({RUN_JSON}{relative}) is not here; pass --weights DIR, the folder "
                f"holding {wanted}")  # fmt: skip
    return f"{error}; pass --weights DIR, the folder holding {wanted}"


def _damaged(path: Path, why: str) -> RunFilesError:
    return RunFilesError(f"{path} is {why}; {RERUN}: the run finds it and trains that model again (its command "
                         f"is recorded in {RUN_JSON})")  # fmt: skip


def _loading(path: Path, load: Callable):
    """``load(path)``, with a failure named in one line (the file, and what to do) rather than a traceback."""
    try:
        return load(path)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
        raise _damaged(path, f"damaged or of another format ({type(error).__name__}: {error})") from None


def check_head_checkpoint(path: Path) -> None:
    """``RunFilesError`` where the head checkpoint ``path`` is missing or fails the training side's own check
    (``checkpoint_is_whole``: a readable archive whose every member matches its CRC)."""
    if not path.is_file():
        raise _damaged(path, "missing")
    if not checkpoint_is_whole(path):
        raise _damaged(path, "damaged (truncated or changed: it is not a whole .keras archive)")
    if not _as_summed(path.parents[2], path):
        raise _damaged(path, "damaged (changed since the run wrote it: its SHA-256 is not the one in SHA256SUMS)")


def _loaded_head(path: Path) -> keras.Model:
    """The head checkpoint ``path``, checked first (``check_head_checkpoint``)."""
    check_head_checkpoint(path)
    return _loading(path, load_head)


def finetuned_record(folder: Path) -> dict:
    """A fine-tuned model's ``result.json``, after checking that its weights file has the SHA-256 it records (the
    check the run makes before it reuses one); ``RunFilesError`` otherwise."""
    path = folder / RESULT_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        digest, head = record["weights_sha256"], record["from_head"]
    except FileNotFoundError:
        raise _damaged(path, "missing") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _damaged(path, f"damaged ({type(error).__name__}: {error})") from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise _damaged(weights, "missing")
    if sha256_file(weights) != digest:
        raise _damaged(weights, f"damaged (its SHA-256 is not the one {RESULT_FILE} records)")
    if not _as_summed(folder.parents[1], folder / RESULT_FILE):
        raise _damaged(folder / RESULT_FILE, "damaged (its SHA-256 is not the one in SHA256SUMS)")
    check_head_checkpoint(RunFolder(folder.parents[1]).checkpoint(head))
    return record


def check_model_files(results_dir: Path, run: RunInfo, row: pd.Series, weights: str | None = None) -> None:
    """Everything ``load_head_predictor`` checks for one leaderboard ``row``, without building anything: the
    weights are the run's and the checkpoints whole. ``RunFilesError`` otherwise (a server checks at start)."""
    run_weights(get_backbone(split_model_name(row["backbone"])[0]), int(row["image_size"]),
                RunConfig.from_json(run.config), row, weights)  # fmt: skip
    if is_finetuned(row["backbone"]):
        finetuned_record(RunFolder(results_dir).finetuned(row["head_id"]))
    else:
        check_head_checkpoint(RunFolder(results_dir).checkpoint(row["head_id"]))


def run_runtime_forward(runtime: str, config: RunConfig, spec: BackboneSpec, source, size: int, precision: str,
                        calibration: Calibration | None = None) -> Forward | None:  # fmt: skip
    """The pooled features of uint8 images as the run computed them, where its runtime was not Keras; else None.

    OpenVINO compiles the IR the run kept under its cache folder (converted again where that is not here) at the
    run's batch shape, padded as extraction pads; int8, the run's quantized IR (quantized again on the run's
    ``calibration`` images where it is not kept and they are there). Where OpenVINO cannot run here (not installed,
    or a Keras backend it cannot convert), Keras computes them, and says so: the probabilities may then differ from
    the run's in the last digits (further in bfloat16). Where int8 cannot be had, OpenVINO float32 does, saying so.
    """
    if runtime != "openvino":
        return None
    batch, dicom = config.extract_batch_size, config.dicom_settings()
    make_model = partial(build_backbone, spec, size, source, seed=config.seed, precision="float32")
    make = partial(build_forward, "openvino", make_model, batch_shape=(batch, size, size, 3),
                   ir_file=openvino_ir_file(Path(config.cache_dir), spec, source, size))  # fmt: skip
    quantize = partial(int8_ir, spec=spec, image_size=size, calibration=calibration, dicom=dicom)
    try:
        forward = _int8_or_float32(make, precision, quantize)
    except RuntimeUnavailableError as error:
        print(f"note: the run computed its features with OpenVINO, which cannot run here ({error}); Keras computes "
              f"them, so the probabilities can differ from the run's in the last digits ({precision})")  # fmt: skip
        return None
    return partial(padded_forward, forward, spec.preprocess, batch_size=batch)


def _int8_or_float32(make: Callable[..., Forward], precision: str, quantize: Callable[[Path], Path]) -> Forward:
    """``make(precision=...)``'s forward; for int8 where the quantized model cannot be had (not kept, its calibration
    images gone, NNCF not installed), OpenVINO float32's, saying so."""
    if precision != INT8:
        return make(precision=precision)
    try:
        return make(precision=INT8, quantize=quantize)
    except (FileNotFoundError, RuntimeUnavailableError) as error:
        print(f"note: the run's int8 model cannot be had here ({error}); OpenVINO computes the features in float32, "
              "so the probabilities can differ from the run's (int8)")  # fmt: skip
        return make(precision="float32")


def operating_threshold(results_dir: Path, head_id: str) -> tuple[str, str, float] | None:
    """``(task, positive classes, threshold)`` of the first task of ``head_id``, chosen on validation."""
    board = pd.read_csv(RunFolder(results_dir).file(LEADERBOARD_CSV))
    rows = board[board["head_id"] == head_id]
    if rows.empty or "op_threshold" not in rows or math.isnan(rows["op_threshold"].iloc[0]):
        return None
    first = rows.iloc[0]
    return first["task"], first["positive"], float(first["op_threshold"])


def overlay_png(image: np.ndarray, heat: np.ndarray, path: Path, title: str) -> Path:
    """The image with ``heat`` (any resolution, [0, 1]) upsampled over it in the jet colour map."""
    upsampled = upsample(heat, image.shape[0])
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.6), layout="constrained")
    try:
        axes[0].imshow(image)
        axes[0].set_title("input", fontsize=10)
        axes[1].imshow(image)
        shown = axes[1].imshow(upsampled, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[1].set_title("heatmap", fontsize=10)
        for axis in axes:
            axis.axis("off")
        fig.colorbar(shown, ax=axes[1], fraction=0.046, label="relevance")
        fig.suptitle(title, fontsize=10)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def image_paths(target: Path) -> list[Path]:
    """``target`` itself, or every image file under the folder ``target``, sorted; ``ValueError`` for a folder
    with none."""
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise FileNotFoundError(f"{target} is neither an image file nor a folder")
    paths = sorted(p for p in target.rglob("*") if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or is_dicom(p)))
    if not paths:
        raise ValueError(f"{target} holds no image file (looked for {', '.join(sorted(IMAGE_SUFFIXES))} and DICOM "
                         "files under any name in it and its sub-folders)")  # fmt: skip
    return paths


def heatmap_names(paths: list[Path], target: Path, method: str) -> dict[Path, Path]:
    """Each image's heatmap file, relative to ``--out``, one per image and the same each time.

    ``target/SUB/NAME.EXT`` gets ``SUB/NAME_METHOD.png``; where two images of a folder share ``NAME`` (``a.png``,
    ``a.jpeg``; without case, for file systems that ignore it) both keep their suffix, ``NAME_EXT_METHOD.png``,
    and a number is added should that still meet another image's name."""
    relative = {path: Path(path.name) if path == target else path.relative_to(target) for path in paths}
    stems = Counter(str(one.with_suffix("")).lower() for one in relative.values())
    names: dict[Path, Path] = {}
    taken: set[str] = set()
    for path in sorted(paths):
        one = relative[path]
        shared = stems[str(one.with_suffix("")).lower()] > 1
        name = next(name for name in _heatmap_candidates(one, method, shared) if str(name).lower() not in taken)
        taken.add(str(name).lower())
        names[path] = name
    return names


def _heatmap_candidates(relative: Path, method: str, keep_suffix: bool):
    """``NAME_METHOD.png``, then ``NAME_EXT_METHOD.png``, then ``NAME_EXT_2_METHOD.png``, ... beside ``relative``."""
    stem, suffix = relative.stem, relative.suffix.lstrip(".")
    if not keep_suffix:
        yield relative.parent / f"{stem}_{method}.png"
    yield relative.parent / f"{stem}_{suffix}_{method}.png"
    for number in count(2):
        yield relative.parent / f"{stem}_{suffix}_{number}_{method}.png"


def run_folder_problem(path: Path) -> str | None:
    """Why writing the file ``path`` could overwrite a run's files, or None.

    It could where it lies in a run's results folder (one holding ``run.json``, ``leaderboard.csv``, ...), at
    its top level or in a folder the run writes (``heads/``, ``plots/``, ...); symbolic links are followed. A
    folder of its own inside a run's (``results/predict``, the default) is fine: no run writes there."""
    path = Path(path).resolve()
    for folder in path.parents:
        marker = next((name for name in MARKERS if (folder / name).is_file()), None)
        if marker is None:
            continue
        inside = path.relative_to(folder).parts
        if len(inside) == 1:
            return f"{folder} is a run's results folder (it holds {marker}): {path.name} there could replace its own"
        if inside[0] in SUBFOLDERS:
            return (f"{path.parent} lies in {inside[0]}/ of the run folder {folder}, which the run writes: "
                    f"{path.name} there could replace the run's own files")  # fmt: skip
    return None


def check_outputs(out_dir: Path, names: list[Path]) -> None:
    """``RunFilesError`` (one line) where ``predictions.csv`` or a heatmap (``names``, relative to ``out_dir``)
    would land on a run's files (``run_folder_problem``)."""
    # One file per folder tells: whether a folder is a run's, or one a run writes, does not depend on the name.
    for name in {Path(name).parent: Path(name) for name in [Path(PREDICTIONS_CSV), *names]}.values():
        if problem := run_folder_problem(Path(out_dir) / name):
            raise RunFilesError(f"--out {out_dir}: {problem}; choose another --out (a new folder, or e.g. "
                                "RESULTS_DIR/predict)")  # fmt: skip


def run_dicom(run: RunInfo) -> DicomSettings:
    """How the run windowed DICOM files (``--dicom-window``, ``--dicom-voi``): predict reads them alike."""
    return RunConfig.from_json(run.config).dicom_settings()


def _checked_image(path: Path, image_size: int, min_side: int, dicom: DicomSettings) -> np.ndarray | SkippedImage:
    """The image decoded at ``image_size`` (a DICOM file windowed as ``dicom`` says), or why the run would have
    left it out."""
    # The run's own checks: what it would have left out, predict refuses.
    problem = name_problem(Path(path)) or image_problem(path, min_side)
    if problem:
        return SkippedImage(path, problem)
    try:
        return load_image(path, image_size, dicom)
    except UnreadableImageError as error:
        return SkippedImage(path, error.reason)


def _decision(
    probabilities: np.ndarray, classes: tuple[str, ...], operating: tuple[str, str, float] | None
) -> tuple[str, dict]:
    """The operating threshold's decision on the first task: the printed clause and the row's columns."""
    if operating is None:
        return "", {}
    task, positive, threshold = operating
    score = float(sum(probabilities[classes.index(name)] for name in Label.parse(positive, multi_label=False).classes))
    flagged = score >= threshold
    verdict = f"; {task}: P({positive}) {score:.3f} {'>=' if flagged else '<'} threshold {threshold:.3f}"
    verdict += " -> FLAGGED" if flagged else " -> not flagged"
    return verdict, {"task": task, "score": score, "threshold": threshold, "flagged": flagged}


def predict_image(
    predictor: AnyPredictor,
    path: str | Path,
    min_side: int,
    operating: tuple[str, str, float] | None,
    method: str,
    out_dir: Path,
    *,
    log: Callable[[str], None] = print,
    heatmap_name: str | Path | None = None,
) -> dict | SkippedImage:
    """One image's ``predictions.csv`` row, with its heatmap overlay written to ``out_dir``; or, where the run would
    have left the image out, a ``SkippedImage`` saying why.

    The command line calls it once per image; it needs no ``argparse``, so
    other front ends (a web page) can call it too. ``min_side`` is the run's
    smallest accepted image side (``RunConfig.min_side()``), ``operating``
    what ``operating_threshold`` returns (or None), and ``method`` one of
    ``METHODS``. ``log`` gets the line the command line prints: the
    prediction, or why the image was skipped. ``heatmap_name`` is the heatmap's
    file relative to ``out_dir`` (``heatmap_names``); by default ``NAME_METHOD.png``.
    """
    path = Path(path)
    method = predictor.heatmap_method(method)
    image = _checked_image(path, predictor.image_size, min_side, predictor.dicom)
    if isinstance(image, SkippedImage):
        log(f"{printable(str(path))}: skipped, {image.reason}")
        return image
    classes = predictor.classes
    probabilities, heat = predictor.answer(path, image, method)
    top = int(np.argmax(probabilities))  # multi-label: the likeliest finding, whose heatmap is drawn
    listing = ", ".join(f"{name} {p:.3f}" for name, p in zip(classes, probabilities, strict=True))
    predicted = classes[top]
    if predictor.multi_label:
        predicted = Label.of_findings([name for name, p in zip(classes, probabilities, strict=True) if p >= 0.5]).text
    row = {"path": str(path), "predicted": predicted,
           **{f"p_{name}": float(p) for name, p in zip(classes, probabilities, strict=True)}}  # fmt: skip
    verdict, decision = _decision(probabilities, classes, operating)
    row |= decision
    out_png = Path(out_dir) / (heatmap_name or f"{path.stem}_{method}.png")
    title = f"{path.name}: {classes[top]} ({probabilities[top]:.2f}); {method} of {classes[top]}; {predictor.label}"
    overlay_png(image, heat, out_png, title)
    row["heatmap"] = str(out_png)
    log(f"{path}: {predicted} ({listing}){verdict}; heatmap {out_png}")
    return row


def write_predictions(out_dir: Path, rows: list[dict]) -> Path:
    """``rows`` (from ``predict_image``) as ``out_dir/predictions.csv``, atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PREDICTIONS_CSV
    with atomic_output(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results_dir", type=Path, metavar="RESULTS_DIR", help="a run's --results-dir")
    parser.add_argument("target", type=Path, metavar="IMAGE_OR_FOLDER")
    parser.add_argument(
        "--backbone",
        metavar="NAME",
        help=f"use this backbone's head: {', '.join(BACKBONES)}; NAME-logreg for its logistic-regression probe, "
        "NAME-ft for its fine-tuned model (--finetune runs), 'ensemble' for the run's ensemble (the mean of the "
        "heads validation cannot tell from the best one; its heatmap is the mean of theirs). Default: the "
        "ensemble where the run has one and no member is fine-tuned, else the head with the best validation "
        "selection score (fine-tuned models only when named)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/predict"), help="default: results/predict")
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="heatmap method; auto: Grad-CAM, or occlusion where the last feature map is below 3x3 (default: auto)",
    )
    parser.add_argument("--weights", metavar="imagenet|none|DIR",
                        help="the folder holding the run's weights file, where the one run.json records has moved "
                        "(or was relative to another folder); it must have the SHA-256 the run recorded")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI: probabilities and a heatmap overlay per image. Exit 2 for a user mistake or a damaged run file, 1 when
    no image could be read."""
    args = _parser().parse_args(argv)
    try:
        check_outputs(args.out, [])  # before the model is built: seconds
        paths = image_paths(args.target)
        predictor = load_predictor(args.results_dir, args.backbone, args.weights)
        method = predictor.heatmap_method(args.method)
        names = heatmap_names(paths, args.target, method)
        check_outputs(args.out, list(names.values()))
    except (ValueError, OSError, KeyError, WeightsUnavailableError) as error:
        print(f"predict: error: {error}", file=sys.stderr)
        return 2
    if predictor.run.not_medical:
        print("NOTE: this run used random-init weights (--weights none) or phantom data: NOT a medical answer.")
    operating = operating_threshold(args.results_dir, predictor.head_id)
    print(f"model: {predictor.description} (head {predictor.head_id}); heatmap: {predictor.heatmap_text(method)}")
    min_side = RunConfig.from_json(predictor.run.config).min_side()
    rows = [predict_image(predictor, path, min_side, operating, method, args.out, heatmap_name=names[path])
            for path in paths]  # fmt: skip
    rows = [row for row in rows if not isinstance(row, SkippedImage)]
    if not rows:
        print(f"predict: error: none of the {len(paths)} image(s) could be read (the reasons are above)",
              file=sys.stderr)  # fmt: skip
        return 1
    written = write_predictions(args.out, rows)
    print(f"wrote {written} and {len(rows)} heatmap(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
