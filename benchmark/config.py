"""Every setting of a run or sweep, in one dataclass.

Grid settings (``image_size``, ``lr``, ``dropout``, ``l2``, ``lr_schedule``)
take several values; every combination is a grid point, trained ``seeds``
times per backbone. Beside them, each backbone and size gets one
logistic-regression probe per ``probe_l2`` value (``probe``), selected apart.

The default grid (2 learning rates x 2 dropout rates x 4 L2 penalties, 16
heads trained together in one model, and 7 probe penalties) was chosen on the
validation split of the real Kermany set with ImageNet MobileNetV2 features,
width 1.0 and 0.35, where it matched a tuned logistic-regression probe
(docs/results.md). A TOML file (``--config``) may set any field; the command
line overrides it.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Collection
from dataclasses import Field, asdict, dataclass, fields, replace
from pathlib import Path

from backbones import AUTO, BACKBONES, DEFAULT_BACKBONES, PRECISION_CHOICES, BackboneSpec, get_backbone
from benchmark.evaluation.metrics import METRICS
from benchmark.evaluation.subgroups import kept_columns, parse_subgroups
from benchmark.run_folder import run_files_problem
from benchmark.settings import (
    HEAD_GRID_FIELDS,
    LR_SCHEDULES,
    TRACKERS,
    CrossValSettings,
    FinetuneRun,
    FinetuneSettings,
    HeadSettings,
    ReportSettings,
    SweepSettings,
    TrackingSettings,
    probe_settings,
    tracking_uri,
)
from common.executors import EXECUTORS, ExecutorSettings, check_cluster, is_address
from features.data.audit import LEAKAGE_POLICIES
from features.data.dataset import SPLIT_ALIASES
from features.data.formats import preset_of
from features.options import annotation, choices_of, declared, number_ranges, option, reuse
from features.quantize import CALIBRATION_IMAGES
from features.runtime import RUNTIME_CHOICES, check_runtime
from features.settings import (
    DICOM_WINDOWS,
    LABELS_GROUP,
    ComputePlan,
    DataSettings,
    DicomSettings,
    ExternalSettings,
    ExtractSettings,
    LabelSettings,
)

_HEAD = HeadSettings()
# HeadSettings fields a run sets once for every head: all but the grid's and the seed.
_SHARED_HEAD_FIELDS = tuple(f.name for f in fields(HeadSettings) if f.name not in (*HEAD_GRID_FIELDS, "seed"))
_FINETUNE = FinetuneSettings()
# Each default is written once, in the stage settings that use it.
_DATA, _EXTRACT, _SWEEP, _REPORT = DataSettings(), ExtractSettings(), SweepSettings(), ReportSettings()
_EXECUTOR, _DICOM = ExecutorSettings(), DicomSettings()
WEIGHTS_CHOICES = ("imagenet", "none")
CLASS_WEIGHTS = ("none", "balanced")
VAL_SOURCES = ("carve", "official")
DEFAULT_DATA = Path("data/chest_xray")  # read when no --data is given and it is there


# The external CSV's columns: options that act only with --external-labels.
EXTERNAL_COLUMNS = ("external_path_column", "external_label_column", "external_findings_column",
                    "external_finding_columns")  # fmt: skip
# Number ranges an option declares: (is the value in range, the range in words); inf and nan never are.
_POSITIVE = (lambda v: v > 0, "positive (a finite number above 0)")
_AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
_NOT_NEGATIVE = (lambda v: v >= 0, "0 or more")
_FRACTION = (lambda v: 0 < v < 1, "in (0, 1)")
DATA_GROUP = "data"
EXTERNAL_GROUP = "external test: another hospital's images, scored by the selected heads unchanged"
FEATURES_GROUP = "backbones and features"
GRID_GROUP = "head grid: every combination is a grid point"
TRAINING_GROUP = "head training"
CROSSVAL_GROUP = "cross-validation of the heads: how much a ranking of backbones holds across patients"
FINETUNE_GROUP = "fine-tuning: after the frozen head, train backbone + head end to end on images"
EXECUTOR_GROUP = "where it runs: this machine, or a cluster (see the README's 'On a cluster')"
OUTPUT_GROUP = "output"
TRACKING_GROUP = "experiment tracking: the finished run logged from its results folder (pip install 'cxr-bench[track]')"
# The --help's groups (argparse argument groups), in order.
OPTION_GROUPS = (DATA_GROUP, LABELS_GROUP, EXTERNAL_GROUP, FEATURES_GROUP, GRID_GROUP, TRAINING_GROUP,
                 CROSSVAL_GROUP, FINETUNE_GROUP, EXECUTOR_GROUP, OUTPUT_GROUP, TRACKING_GROUP)  # fmt: skip


def _flag(name: str) -> str:
    """The command-line spelling of the RunConfig field ``name``, without its dashes."""
    return name.replace("_", "-")


def _absolute(path: str) -> str:
    """``path`` absolute and resolved (symbolic links followed) from the working folder."""
    return str(Path(path).resolve())


@dataclass(frozen=True)
class RunConfig:
    """One benchmark run. The CLI (and ``--config`` TOML) fill it; every result row carries it.

    Every field is an option declared once, here (``features.options``): the command line, the config file,
    the range and choice checks and the ``--help`` are built from the declarations. Frozen: what the run
    derives (absolute paths, the default weights) is a new config (``resolved``), never a change to this one.
    """

    data: str | None = option(
        None, "dataset folder, Kermany or class-folder layout (default: data/chest_xray/ if present, else the "
        "synthetic phantom set)", group=DATA_GROUP, metavar="DIR")  # fmt: skip
    labels: str | None = reuse(LabelSettings, "labels")
    path_column: str = reuse(LabelSettings, "path_column")
    label_column: str = reuse(LabelSettings, "label_column")
    patient_column: str | None = reuse(LabelSettings, "patient_column")
    patient_pattern: str | None = reuse(LabelSettings, "patient_pattern")
    split_column: str | None = reuse(LabelSettings, "split_column")
    classes: tuple[str, ...] = reuse(LabelSettings, "classes")
    split_lists: tuple[str, ...] = option(
        (), "official split lists instead of a split column: SPLIT=FILE pairs, each file naming its images one a "
        "line, by CSV path or file name (NIH: train=train_val_list.txt test=test_list.txt)", group=LABELS_GROUP,
        metavar="SPLIT=FILE")  # fmt: skip
    findings_column: str | None = reuse(LabelSettings, "findings_column")
    finding_separator: str = reuse(LabelSettings, "finding_separator")
    no_finding: str = reuse(LabelSettings, "no_finding")
    finding_columns: tuple[str, ...] = reuse(LabelSettings, "finding_columns")
    uncertain: str = reuse(LabelSettings, "uncertain")
    blank: str = reuse(LabelSettings, "blank")
    sex_column: str | None = reuse(LabelSettings, "sex_column")
    age_column: str | None = reuse(LabelSettings, "age_column")
    view_column: str | None = reuse(LabelSettings, "view_column")
    labels_format: str = reuse(LabelSettings, "labels_format")
    reader_vote: str = reuse(LabelSettings, "reader_vote")
    external_test: str | None = option(
        None, "a second dataset (class folders, or a CSV with --external-labels) the selected heads are tested on "
        "unchanged, reported beside the internal test", group=EXTERNAL_GROUP, metavar="DIR")  # fmt: skip
    external_labels: str | None = option(
        None, "the external test set's labels CSV (read in the training CSV's form and columns unless the options "
        "below name its own) (default: none; its class folders are the labels)", group=EXTERNAL_GROUP,
        metavar="FILE.csv")  # fmt: skip
    external_map: tuple[str, ...] = option(
        (), "external class or finding names that differ from the training ones, as OLD=NEW pairs; for multi-label "
        "training NEW may be 'No Finding' (an external NORMAL class) (default: the same names, ignoring case)",
        group=EXTERNAL_GROUP, metavar="OLD=NEW")  # fmt: skip
    # The external labels CSV's own columns; None: the training CSV's.
    external_path_column: str | None = option(
        None, "the external CSV's column of image paths (default: --path-column)", group=EXTERNAL_GROUP,
        metavar="NAME")  # fmt: skip
    external_label_column: str | None = option(
        None, "the external CSV's column of class names (default: --label-column)", group=EXTERNAL_GROUP,
        metavar="NAME")  # fmt: skip
    external_findings_column: str | None = option(
        None, "the external CSV's column of separated findings (NIH's form) (default: the training CSV's form)",
        group=EXTERNAL_GROUP, metavar="NAME")  # fmt: skip
    external_finding_columns: tuple[str, ...] = option(
        (), "the external CSV's 1/0/-1/blank finding columns (CheXpert's form) (default: the training CSV's form)",
        group=EXTERNAL_GROUP, metavar="NAME")  # fmt: skip
    backbones: tuple[str, ...] = option(DEFAULT_BACKBONES, f"backbones to compare: {', '.join(BACKBONES)}",
                                        group=FEATURES_GROUP, metavar="NAME")  # fmt: skip
    weights: str | None = option(
        None, "imagenet (Keras download), none (random init) or a folder of weight files; a <BACKBONE>.h5 there is a "
        "whole classifier's Keras 2 weights (CheXNet's DenseNet121.h5), its top dropped (default: imagenet on real "
        "data, none on the phantom set)", group=FEATURES_GROUP, metavar="imagenet|none|DIR")  # fmt: skip
    image_size: tuple[int, ...] = option(
        (), "input sizes to sweep, for every backbone (default: each backbone's own input size)",
        group=FEATURES_GROUP, metavar="PX")  # fmt: skip
    lr: tuple[float, ...] = option((3e-4, 1e-3), "Adam learning rates", group=GRID_GROUP, metavar="LR",
                                   range=_POSITIVE)  # fmt: skip
    dropout: tuple[float, ...] = option((0.5, 0.7), "dropout rates before the softmax", group=GRID_GROUP,
                                        metavar="P", range=(lambda v: 0 <= v < 1, "in [0, 1)"))  # fmt: skip
    l2: tuple[float, ...] = option(
        (0.0, 1e-2, 1e-1, 1.0), "L2 penalties on the softmax kernel: loss + L2 x sum(W^2), as an L2-regularised "
        "logistic regression", group=GRID_GROUP, metavar="L2",
        range=(lambda v: v >= 0, "0 or more (a finite number)"))  # fmt: skip
    lr_schedule: tuple[str, ...] = option(
        (_HEAD.lr_schedule,), "constant and/or step (decay by --step-decay-factor every --step-decay-epochs)",
        group=GRID_GROUP, choices=LR_SCHEDULES)  # fmt: skip
    seeds: int = option(1, "train each grid point with N seeds; tables show mean ± std", group=GRID_GROUP,
                        metavar="N", range=_AT_LEAST_1)  # fmt: skip
    probe: bool = option(True, "no logistic-regression probe (default: off: the probe is fitted beside each head)",
                         group=GRID_GROUP)  # fmt: skip
    probe_l2: tuple[float, ...] = option(
        (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0), "penalties of the logistic-regression probe (scikit-learn "
        "L-BFGS, C = 1/(2 x L2 x n_train)), selected on validation and reported as '<backbone>-logreg' beside each "
        "head", group=GRID_GROUP, metavar="L2", range=_POSITIVE)  # fmt: skip
    select_by: str = option(
        _SWEEP.select_by, "validation score that picks each backbone's grid point: val_loss, TASK.METRIC (e.g. "
        "normal_vs_pneumonia.auc) or, multi-label, macro_auc", group=GRID_GROUP, metavar="SCORE")  # fmt: skip
    cv: int = option(
        0, "K: after the sweep, K patient-grouped, class-stratified folds of train + validation; in each the whole "
        "head grid is trained, selected on an inner validation carve and scored on the held-out fold (cv_folds.csv, "
        "cv_summary.csv); 0: none", group=CROSSVAL_GROUP, metavar="K",
        range=(lambda v: v == 0 or v >= 2, "0 (off) or at least 2 folds"))  # fmt: skip
    cv_repeats: int = option(CrossValSettings.repeats, "draw the K folds R times, each with another seed (needs --cv)",
                             group=CROSSVAL_GROUP, metavar="R", range=_AT_LEAST_1)  # fmt: skip
    epochs: int = option(_HEAD.epochs, "maximum epochs", group=TRAINING_GROUP, metavar="N", range=_AT_LEAST_1)
    batch_size: int = option(_HEAD.batch_size, "head batch size", group=TRAINING_GROUP, metavar="N",
                             range=_AT_LEAST_1)  # fmt: skip
    patience: int = option(_HEAD.patience, "early-stopping patience on validation loss", group=TRAINING_GROUP,
                           metavar="N", range=_NOT_NEGATIVE)  # fmt: skip
    class_weight: str = option(_HEAD.class_weight, "weigh classes equally in the loss", group=TRAINING_GROUP,
                               choices=CLASS_WEIGHTS)  # fmt: skip
    standardize: bool = option(
        _HEAD.standardize, "feed raw pooled features to the head instead of z-scoring them with train statistics "
        "(default: off: features are z-scored)", group=TRAINING_GROUP)  # fmt: skip
    step_decay_epochs: int = option(_HEAD.step_decay_epochs, "epochs between learning-rate drops of the step "
                                    "schedule", group=TRAINING_GROUP, metavar="N", range=_AT_LEAST_1)  # fmt: skip
    step_decay_factor: float = option(_HEAD.step_decay_factor, "factor of each drop of the step schedule",
                                      group=TRAINING_GROUP, metavar="F",
                                      range=(lambda v: 0 < v <= 1, "in (0, 1]"))  # fmt: skip
    seed: int = option(_HEAD.seed, "seeds splits, random init and the first head seed", group=TRAINING_GROUP,
                       metavar="N")  # fmt: skip
    val_fraction: float = option(_DATA.val_fraction, "share of train carved as validation, stratified, whole "
                                 "patients", group=DATA_GROUP, metavar="F", range=_FRACTION)  # fmt: skip
    val_source: str = option(_DATA.val_source, "carve validation from train, or use the dataset's own val folder",
                             group=DATA_GROUP, choices=VAL_SOURCES)  # fmt: skip
    test_fraction: float = option(_DATA.test_fraction, "share carved as test when the data has no test split",
                                  group=DATA_GROUP, metavar="F", range=_FRACTION)  # fmt: skip
    limit_per_class: int | None = option(
        _DATA.limit_per_class, "keep at most N images per class and split, for quick runs (default: every image)",
        group=DATA_GROUP, metavar="N", range=_AT_LEAST_1)  # fmt: skip
    min_image_side: int | None = option(
        None, "skip images whose shorter side is below PX; 0 keeps every readable image (default: the largest "
        "minimum input size of the chosen backbones)", group=DATA_GROUP, metavar="PX", range=_NOT_NEGATIVE)  # fmt: skip
    dicom_window: str = option(
        _DICOM.window, "how a DICOM file's stored values become 8 bits: file (the VOI LUT or window the file "
        "states, --dicom-voi choosing among several) or range (the full used range, min..max, the file's window "
        "ignored); the file's rescale is always applied, MONOCHROME1 always inverted", group=DATA_GROUP,
        choices=DICOM_WINDOWS)  # fmt: skip
    dicom_voi: int = option(_DICOM.voi, "which of a DICOM file's VOI LUTs or windows --dicom-window file applies: 1 "
                            "the first (a file stating fewer: its last)", group=DATA_GROUP, metavar="N",
                            range=_AT_LEAST_1)  # fmt: skip
    leakage: str = option(
        _DATA.leakage, "images found in two splits or under two labels (same bytes): warn and keep them, drop the "
        "train/val copies, or fail", group=DATA_GROUP, choices=LEAKAGE_POLICIES)  # fmt: skip
    rehash: bool = option(
        _DATA.rehash, "read every image's bytes again on each run instead of trusting the image check remembered for "
        "its size and modification time: an image replaced under an unchanged size and time is checked again and "
        "its cached features and pixels dropped (reads every byte on every run; default: off)",
        group=DATA_GROUP)  # fmt: skip
    sort_metric: str = option(_REPORT.sort_metric, "test metric the leaderboard tables are sorted by",
                              group=OUTPUT_GROUP, choices=METRICS)  # fmt: skip
    target_sensitivity: float = option(
        _REPORT.target_sensitivity, "operating point: the threshold is chosen on validation to reach this "
        "sensitivity, then reported on test", group=OUTPUT_GROUP, metavar="S",
        range=(lambda v: 0 < v <= 1, "in (0, 1]"))  # fmt: skip
    bootstrap: int = option(
        _REPORT.bootstrap, "resamples of the test set for 95%% confidence intervals; 0: none", group=OUTPUT_GROUP,
        metavar="N", range=(lambda v: v == 0 or v >= 100, "0 (off) or at least 100 resamples"))  # fmt: skip
    subgroups: tuple[str, ...] = option(
        (), "report each selected head's test AUC, sensitivity and specificity per subgroup, with intervals and the "
        "largest gap between subgroups: sex, view, age in bins of whole years (age:0,18,40,65 gives 0–17, 18–39, "
        "40–64, 65+) or any other labels CSV column by its name", group=OUTPUT_GROUP,
        metavar="COLUMN")  # fmt: skip
    views: tuple[str, ...] = option(
        (), "keep only the images taken in these views (PA AP LATERAL ...; --view-column or the DICOM header); "
        "the others are left out, listed in skipped.csv (default: every view)", group=DATA_GROUP,
        metavar="VIEW")  # fmt: skip
    plots: bool = option(
        _REPORT.plots, "no figures: leave out the report's PNGs (ROC and reliability curves, training curves, "
        "confusion matrices, paired ΔAUC matrices, subgroup forest plots, critical-difference diagrams); every table, "
        "CSV and verdict is the same, and a small run takes about 40%% less time (default: off: the figures are "
        "drawn)", group=OUTPUT_GROUP)  # fmt: skip
    results_dir: str = option(_SWEEP.results_dir, "where reports go", group=OUTPUT_GROUP, metavar="DIR")
    cache_dir: str = option(_EXTRACT.cache_dir, "feature (and decoded pixel) cache folder", group=FEATURES_GROUP,
                            metavar="DIR")  # fmt: skip
    extract_batch_size: int = option(_EXTRACT.batch_size, "images per backbone forward pass", group=FEATURES_GROUP,
                                     metavar="N", range=_AT_LEAST_1)  # fmt: skip
    extract_shard_size: int = option(
        _EXTRACT.shard_size, "images per saved extraction shard: a killed extraction resumes from the last whole "
        "shard", group=FEATURES_GROUP, metavar="N", range=_AT_LEAST_1)  # fmt: skip
    # precision and runtime are resolved once per run (benchmark.pipeline); ExtractSettings gets the resolved ones.
    precision: str = option(
        AUTO, "backbone compute type. auto: bfloat16 where the CPU (avx512_bf16, amx_bf16) or GPU computes it "
        "natively and a start-up probe finds it faster, else float32; run.json says which and why. bfloat16/float16 "
        "keep float32 weights (Keras mixed precision). int8: OpenVINO post-training quantization (NNCF, pip install "
        "'cxr-bench[int8]'), calibrated on train-split images only; never chosen by auto (its cost in accuracy: "
        "README)", group=FEATURES_GROUP, choices=PRECISION_CHOICES)  # fmt: skip
    int8_calibration: int = option(
        CALIBRATION_IMAGES, "--precision int8: how many train-split images (a seeded sample) set NNCF's activation "
        "ranges", group=FEATURES_GROUP, metavar="N", range=_AT_LEAST_1)  # fmt: skip
    jit_compile: bool = option(_EXTRACT.jit_compile, "XLA-compile the backbone forward pass", group=FEATURES_GROUP)
    runtime: str = option(
        AUTO, "where the backbone runs. auto: openvino, an inference runtime for CPUs, where it is installed (pip "
        "install 'cxr-bench[openvino]') and no GPU is in use, else keras; run.json says which and why",
        group=FEATURES_GROUP, choices=RUNTIME_CHOICES)  # fmt: skip
    pixel_cache: bool = option(
        _EXTRACT.pixel_cache, "decode images for every backbone instead of once per size into a uint8 cache "
        "(default: off: images are decoded once per size)", group=FEATURES_GROUP)  # fmt: skip
    extract_only: bool = option(False, "extract (and cache) features, train nothing", group=FEATURES_GROUP)
    head_workers: int = option(
        _SWEEP.head_workers, "processes training head groups in parallel, one thread each; 0: one per CPU core up to "
        "4, 1: in this process", group=TRAINING_GROUP, metavar="N",
        range=(lambda v: v >= 0, "0 (auto) or more"))  # fmt: skip
    executor: str = option(
        _EXECUTOR.kind, "local: here, as always; dask: feature extraction, head groups and fine-tuning as tasks of a "
        'Dask cluster (pip install "cxr-bench[dask]"); selection and reports stay here', group=EXECUTOR_GROUP,
        choices=EXECUTORS)  # fmt: skip
    cluster: str | None = option(
        _EXECUTOR.cluster, "the Dask scheduler's address (tcp://host:8786) or scheduler file (default: "
        "DASK_SCHEDULER_ADDRESS if set, else a local cluster of --head-workers single-threaded processes); "
        "--cache-dir and --results-dir must be on a filesystem every worker sees", group=EXECUTOR_GROUP,
        metavar="ADDRESS|FILE")  # fmt: skip
    finetune: bool = option(False, "fine-tune each backbone's selected head; rows '<backbone>-ft' join the "
                            "leaderboard", group=FINETUNE_GROUP)  # fmt: skip
    finetune_layers: str = option(_FINETUNE.layers, "top layers to unfreeze (BatchNormalization stays frozen), or "
                                  "all", group=FINETUNE_GROUP, metavar="N|all")  # fmt: skip
    finetune_lr: float = option(_FINETUNE.lr, "learning rate of the head", group=FINETUNE_GROUP, metavar="LR")
    finetune_lr_factor: float = option(
        _FINETUNE.lr_factor, "backbone learning rate = LR x F at the top, 10x lower at the lowest unfrozen layer",
        group=FINETUNE_GROUP, metavar="F")  # fmt: skip
    finetune_epochs: int = option(_FINETUNE.epochs, "maximum epochs per size (early stopping on validation loss)",
                                  group=FINETUNE_GROUP, metavar="N")  # fmt: skip
    finetune_batch_size: int = option(_FINETUNE.batch_size, "images per fine-tuning step", group=FINETUNE_GROUP,
                                      metavar="N")  # fmt: skip
    finetune_patience: int = option(_FINETUNE.patience, "epochs without a better validation loss before a size "
                                    "stops", group=FINETUNE_GROUP, metavar="N")  # fmt: skip
    finetune_sizes: tuple[int, ...] = option(
        _FINETUNE.sizes, "progressive resizing: train at each size in turn, small first (default: the head's)",
        group=FINETUNE_GROUP, metavar="PX")  # fmt: skip
    augment: bool = option(_FINETUNE.augment, "light augmentation while fine-tuning: flip, rotation, zoom, "
                           "brightness, contrast", group=FINETUNE_GROUP)  # fmt: skip
    progress: bool = option(_SWEEP.progress, "no progress bars (default: off: progress bars are shown)",
                            group=OUTPUT_GROUP)  # fmt: skip
    track: str | None = option(
        None, "log the finished run to MLflow: the config as parameters, a nested run per grid point (its settings, "
        "validation numbers and training curves), the test metrics, the report and plots as artefacts; checked "
        "before any work (the mlflow package, the server's /health) (default: none)", group=TRACKING_GROUP,
        choices=TRACKERS)  # fmt: skip
    tracking_uri: str | None = option(
        None, "the MLflow tracking store, with --track mlflow (default: MLFLOW_TRACKING_URI if set, else "
        "sqlite:///<the results folder's parent>/mlruns.db, a local SQLite store, as MLflow 3 deprecates its file "
        "store; look at it with mlflow ui --backend-store-uri that URI)", group=TRACKING_GROUP,
        metavar="URI")  # fmt: skip
    tensorboard: str | None = option(
        None, "write the heads' and fine-tuned models' training curves (loss, accuracy, ... per epoch) as "
        "TensorBoard event files, a subfolder per grid point; not inside the results folder's own folders "
        "(tensorboard --logdir DIR) (default: none)", group=TRACKING_GROUP, metavar="DIR")  # fmt: skip

    def __post_init__(self):
        # A config file may give one value where a field takes several: a list of one.
        for name in TUPLE_FIELDS:
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(value) if isinstance(value, list | tuple) else (value,))

    def validate(self, given: Collection[str] | None = None) -> RunConfig:
        """Fail before any work on a bad value, naming the valid ones; return the config the run uses (``resolved``).

        ``given`` names the fields the user set (command line or ``--config``); an option given where it does
        nothing is refused. Without ``given``, the fields that differ from their defaults count as given.
        This config is left as it is.
        """
        for name in self.backbones:  # an unknown name fails first, naming the valid ones
            get_backbone(name)
        if not self.backbones:
            raise ValueError(f"no backbone chosen; valid backbones: {', '.join(BACKBONES)}")
        if self.weights is not None and self.weights not in WEIGHTS_CHOICES and not Path(self.weights).is_dir():
            raise ValueError(
                f"--weights must be one of {', '.join(WEIGHTS_CHOICES)} or an existing folder, not {self.weights!r}"
            )
        if self.data is not None and not Path(self.data).is_dir():
            raise ValueError(f"--data {self.data} is not a folder")
        if self.labels is not None and (self.data is None or not Path(self.labels).is_file()):
            raise ValueError(f"--labels {self.labels} is not a file" if self.data is not None else
                             "--labels needs --data DIR, the folder its image paths are relative to")  # fmt: skip
        self._validate_choices()
        self._validate_split_lists()
        self._validate_findings()
        self._validate_external()
        parse_subgroups(self.subgroups)
        check_runtime(self.runtime, self.precision)
        self._validate_numbers()
        for flag, sizes in (("--image-size", self.image_size), ("--finetune-sizes", self.finetune_sizes)):
            self._check_sizes(flag, sizes)
        for ok, message in self._value_checks():
            if not ok:
                raise ValueError(message)
        self.finetune_settings().validate()
        if self.executor == "dask" and self.cluster is not None:
            check_cluster(self.cluster)
        task, _, metric = self.select_by.partition(".")
        if self.select_by not in ("val_loss", "macro_auc") and (not task or metric not in METRICS):
            raise ValueError(
                f"--select-by must be val_loss, macro_auc (multi-label) or TASK.METRIC with METRIC one of "
                f"{', '.join(METRICS)} (for example normal_vs_pneumonia.auc), not {self.select_by!r}"
            )
        self._refuse_idle_options(self._changed() if given is None else given)
        if self.tensorboard is not None and (problem := run_files_problem(Path(self.tensorboard), self.results_dir)):
            raise ValueError(f"--tensorboard {self.tensorboard}: {problem}; choose another folder (a new one, or "
                             "e.g. RESULTS_DIR/tensorboard)")  # fmt: skip
        return self.resolved()

    def _check_sizes(self, flag: str, sizes: tuple[int, ...]) -> None:
        """Every size at or above every chosen backbone's minimum; the message names ``flag``."""
        for size in sizes:
            for name in self.backbones:
                try:
                    get_backbone(name).check_size(size)
                except ValueError as error:
                    raise ValueError(f"{flag}: {error}") from None

    def _validate_numbers(self) -> None:
        """Every number option finite and in its range (``NUMBER_RANGES``); the message names the option."""
        for name, (in_range, words) in NUMBER_RANGES.items():
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,)
            if name in TUPLE_FIELDS and not values:
                raise ValueError(f"--{_flag(name)} needs at least one value ({words})")
            for one in values:
                finite = not isinstance(one, float) or math.isfinite(one)  # an int is finite, however large
                if one is not None and not (finite and in_range(one)):
                    raise ValueError(f"--{_flag(name)} must be {words}, not {one}")
        highest = 2**32 - self.seeds - self.cv_repeats + 1  # seeds count up from --seed; NumPy takes < 2**32
        if not 0 <= self.seed <= highest:
            raise ValueError(f"--seed must be from 0 to {highest} (the seeds of --seeds and --cv-repeats count up "
                             f"from it), not {self.seed}")  # fmt: skip

    def _changed(self) -> set[str]:
        """The fields whose value differs from the default: what a config built in code sets."""
        default = RunConfig()
        return {f.name for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)}

    def _refuse_idle_options(self, given: Collection[str]) -> None:
        """Fail on an option the user gave that does nothing beside the others (``--probe-l2`` with
        ``--no-probe``): it was meant to change the run, and silently would not."""
        for names, idle, why in self._idle_options():
            for name in names:
                if idle and name in given:
                    raise ValueError(f"--{_flag(name)} does nothing {why}")

    def _external_format(self) -> str:
        """The external CSV's --labels-format: recognised on its own (auto), unless the run asked for none."""
        return "none" if self.labels_format == "none" else "auto"

    def _presets(self) -> list[dict[str, object]]:
        """What the labels files' recognised formats supply (``features.data.formats``), training and external:
        the options they make act (``--uncertain`` for CheXpert's columns) are not idle."""
        files = ((self.labels, self.labels_format), (self.external_labels, self._external_format()))
        return [preset_of(path, form) for path, form in files if path is not None and Path(path).is_file()]

    def _idle_options(self) -> list[tuple[tuple[str, ...], bool, str]]:
        """(options, whether they do nothing in this run, why) for the options that act only beside another."""
        external_csv = self.external_test is not None and self.external_labels is not None
        presets = self._presets()
        formats = {preset.get("labels_format") for preset in presets}
        preset_findings, preset_columns = (any(preset.get(name) for preset in presets)
                                           for name in ("findings_column", "finding_columns"))  # fmt: skip
        return [
            (("labels_format",), self.labels is None and not external_csv,
             "without --labels or --external-labels (it names the form of a labels CSV)"),
            (("reader_vote",), "vindr" not in formats,
             "without a VinDr-CXR labels file (it combines that set's several readers per image)"),
            (("probe_l2",), not self.probe, "without the probe (--no-probe given)"),
            (FINETUNE_FIELDS, not self.finetune, "without --finetune"),
            (("external_map", *EXTERNAL_COLUMNS), self.external_test is None, "without --external-test"),
            (EXTERNAL_COLUMNS, self.external_labels is None,
             "without --external-labels (an external set of class folders has no CSV columns)"),
            (("uncertain", "blank"), not (self.finding_columns or (external_csv and self.external_finding_columns)
                                          or preset_columns),
             "without --finding-columns (it applies to CheXpert's 1/0/-1/blank finding columns only)"),
            (("finding_separator", "no_finding"),
             self.findings_column is None and not (external_csv and self.external_findings_column)
             and not preset_findings,
             "without --findings-column (it applies to NIH's column of separated findings only)"),
            (("tracking_uri",), self.track != "mlflow", "without --track mlflow"),
            (("track", "tensorboard"), self.extract_only,
             "with --extract-only (it logs the finished run's reports, and --extract-only writes none)"),
            (("step_decay_epochs", "step_decay_factor"), "step" not in self.lr_schedule,
             "without --lr-schedule step"),
            (("patient_column", "split_column", "classes"), self.labels is None,
             "without --labels (class folders name the classes; patients come from the file names)"),
            (("path_column", "label_column"), self.labels is None and not external_csv,
             "without --labels or --external-labels (class folders have no CSV columns)"),
        ]  # fmt: skip

    def resolved(self) -> RunConfig:
        """A copy as the run uses and records it; this config is left as it is. Calling it again changes nothing.

        Every path option is absolute and resolved, so ``run.json`` names the same files from any working folder
        (``predict``, ``serve``) and two spellings of one folder are one setting; backbone names are spelled as
        registered; without ``--data`` the data is ``data/chest_xray/`` where it is there (else the phantom set);
        without ``--weights`` the weights are imagenet on real data and none on the phantom set.
        """
        data = self.data if self.data is not None or not DEFAULT_DATA.is_dir() else str(DEFAULT_DATA)
        paths = {name: _absolute(getattr(self, name)) for name in ("labels", "external_test", "external_labels",
                 "results_dir", "cache_dir", "tensorboard") if getattr(self, name) is not None}  # fmt: skip
        weights = self.weights or ("none" if data is None else "imagenet")
        pairs = (pair.partition("=") for pair in self.split_lists)
        return replace(
            self, **paths, data=None if data is None else _absolute(data),
            backbones=tuple(get_backbone(name).name for name in self.backbones),
            weights=weights if weights in WEIGHTS_CHOICES else _absolute(weights),
            cluster=self.cluster if self.cluster is None or is_address(self.cluster) else _absolute(self.cluster),
            split_lists=tuple(f"{split}={_absolute(path.strip())}" if sign else split for split, sign, path in pairs),
            tracking_uri=self._tracking_uri(),
        )  # fmt: skip

    def _tracking_uri(self) -> str | None:
        """The MLflow store of ``--track mlflow``: ``--tracking-uri``, else MLflow's own ``MLFLOW_TRACKING_URI``, else
        a SQLite file beside the results folder (MLflow 3 deprecates its file store); None without tracking."""
        return tracking_uri(self.tracking_uri, self.results_dir) if self.track == "mlflow" else self.tracking_uri

    def _value_checks(self) -> list[tuple[bool, str]]:
        """(is the value valid, the message) for the settings that must fit one another."""
        return [
            (self.cv_repeats == 1 or self.cv,
             f"--cv-repeats {self.cv_repeats} needs --cv K (the folds it repeats; without --cv none are drawn)"),
            (not (self.jit_compile and self.runtime == "openvino"),
             "--jit-compile asks Keras for XLA; it does not go with --runtime openvino, which compiles its own graph"),
            (not (self.subgroups or self.views) or self.data is not None or DEFAULT_DATA.is_dir(),
             f"--{'subgroups' if self.subgroups else 'views'} needs --data DIR: the synthetic phantom set records no "
             "sex, age or view"),
            (self.cluster is None or self.executor != "local",
             f"--cluster {self.cluster} needs --executor dask (the local executor runs everything here)"),
        ]  # fmt: skip

    def _validate_split_lists(self) -> None:
        """Fail on a split list not written SPLIT=FILE, an unknown split, a missing file, or lists beside a column."""
        for pair in self.split_lists:
            split, sign, path = pair.partition("=")
            if not sign or split.strip().lower() not in SPLIT_ALIASES:
                raise ValueError(f"--split-lists takes SPLIT=FILE pairs with SPLIT one of {', '.join(SPLIT_ALIASES)} "
                                 f"(for example test=test_list.txt), not {pair!r}")  # fmt: skip
            if not Path(path.strip()).is_file():
                raise ValueError(f"--split-lists {pair}: {path.strip()} is not a file")
        if self.split_lists and (self.labels is None or self.split_column is not None):
            raise ValueError("--split-lists needs --labels FILE.csv, and replaces --split-column (give one of them)")

    def _validate_findings(self) -> None:
        """Fail on multi-label options without a labels CSV, both forms at once, or an unknown -1/blank policy."""
        if (self.findings_column is not None or self.finding_columns) and self.labels is None:
            raise ValueError("--findings-column and --finding-columns need --labels FILE.csv")
        if self.patient_pattern is not None and self.labels is None:
            raise ValueError("--patient-pattern needs --labels FILE.csv (folders read the patient from Kermany's "
                             "file names)")  # fmt: skip
        if self.findings_column is not None and self.finding_columns:
            raise ValueError("give --findings-column (findings in one column, NIH) or --finding-columns (one column "
                             "per finding, CheXpert), not both")  # fmt: skip
        if not self.finding_separator:
            raise ValueError("--finding-separator must be a character, for example '|'")

    def _validate_choices(self) -> None:
        """Every option declared with choices holds one of them (a config file is not checked by argparse)."""
        for name, choices in CHOICES.items():
            value = getattr(self, name)
            if name in TUPLE_FIELDS and not value:
                raise ValueError(f"--{_flag(name)} needs at least one value ({', '.join(choices)})")
            if value is None:  # an option that may be left out (--track)
                continue
            for one in value if name in TUPLE_FIELDS else (value,):
                if one not in choices:
                    raise ValueError(f"--{_flag(name)} must be one of {', '.join(choices)}, not {one!r}")

    def _validate_external(self) -> None:
        """Fail on an external test folder or labels file that is not there, or a mapping not written OLD=NEW."""
        if self.external_test is not None and not Path(self.external_test).is_dir():
            raise ValueError(f"--external-test {self.external_test} is not a folder")
        if self.external_labels is not None and self.external_test is None:
            raise ValueError("--external-labels needs --external-test DIR, the folder its image paths are relative to")
        if self.external_labels is not None and not Path(self.external_labels).is_file():
            raise ValueError(f"--external-labels {self.external_labels} is not a file")
        for pair in self.external_map:
            old, sign, new = pair.partition("=")
            if not (sign and old.strip() and new.strip()):
                raise ValueError(f"--external-map takes OLD=NEW pairs (for example PNEUMONIA=bacterial), not {pair!r}")

    def label_settings(self) -> LabelSettings:
        """How the training labels are read (class folders, or the labels CSV in one of its forms)."""
        return LabelSettings(
            labels=self.labels, path_column=self.path_column, label_column=self.label_column,
            patient_column=self.patient_column, patient_pattern=self.patient_pattern,
            split_column=self.split_column, classes=self.classes,
            split_lists=tuple((split.strip(), path.strip()) for split, _, path in
                              (pair.partition("=") for pair in self.split_lists)),
            findings_column=self.findings_column, finding_separator=self.finding_separator,
            no_finding=self.no_finding, finding_columns=self.finding_columns, uncertain=self.uncertain,
            blank=self.blank, sex_column=self.sex_column, age_column=self.age_column, view_column=self.view_column,
            labels_format=self.labels_format, reader_vote=self.reader_vote,
            attribute_columns=kept_columns(parse_subgroups(self.subgroups)),
        )  # fmt: skip

    def external_settings(self) -> ExternalSettings | None:
        """The external test set's settings, or None: its CSV read with its own columns where given, else the
        training CSV's, and in the training CSV's label form unless its own findings column(s) are named."""
        if self.external_test is None:
            return None
        own_form = self.external_findings_column is not None or bool(self.external_finding_columns)
        labels = replace(
            self.label_settings(), labels=self.external_labels, labels_format=self._external_format(),
            patient_column=None, patient_pattern=None,
            split_column=None,
            classes=(), split_lists=(), attribute_columns=(),  # subgroups are reported on the internal test only
            path_column=self.external_path_column or self.path_column,
            label_column=self.external_label_column or self.label_column,
            findings_column=self.external_findings_column if own_form else self.findings_column,
            finding_columns=self.external_finding_columns if own_form else self.finding_columns,
        )  # fmt: skip
        pairs = tuple(tuple(part.strip() for part in pair.split("=", 1)) for pair in self.external_map)
        return ExternalSettings(root=self.external_test, labels=labels, mapping=pairs)

    def min_side(self) -> int:
        """Images whose shorter side is below this are skipped: the given value, else the
        largest minimum input size among the chosen backbones."""
        if self.min_image_side is not None:
            return self.min_image_side
        return max(get_backbone(name).min_size for name in self.backbones)

    def sizes_for(self, spec: BackboneSpec) -> tuple[int, ...]:
        """The image sizes of the grid for ``spec``: the given ones, else its default."""
        return self.image_size or (spec.default_size,)

    def head_grid(self) -> list[HeadSettings]:
        """Every Adam-trained head per backbone and size: lr x dropout x l2 x schedule x seed."""
        shared = {f.name: getattr(self, f.name) for f in fields(HeadSettings) if f.name in _SHARED_HEAD_FIELDS}
        return [
            HeadSettings(**shared, lr=lr, dropout=dropout, l2=l2, lr_schedule=schedule, seed=self.seed + offset)
            for lr, dropout, l2, schedule, offset in itertools.product(
                self.lr, self.dropout, self.l2, self.lr_schedule, range(self.seeds)
            )
        ]

    def probe_grid(self) -> list[HeadSettings]:
        """The logistic-regression probes per backbone and size (none without ``probe``): deterministic, one seed."""
        return probe_settings(self.probe_l2, self.head_grid()[0]) if self.probe else []

    def extraction_plan(self) -> list[tuple[BackboneSpec, int]]:
        """Every (backbone, image size) whose features the run needs, in order."""
        return [(spec, size) for spec in map(get_backbone, self.backbones) for size in self.sizes_for(spec)]

    # Each stage's settings, derived here and nowhere else: a stage reads only its own object.

    def executor_settings(self) -> ExecutorSettings:
        """Where the tasks run; a local Dask cluster gets as many workers as ``--head-workers`` asks for."""
        return ExecutorSettings(kind=self.executor, cluster=self.cluster, local_workers=self.head_workers)

    def tracking_settings(self) -> TrackingSettings:
        """Where the finished run is logged (``--track``, ``--tracking-uri``, ``--tensorboard``), as it resolves."""
        resolved = self.resolved()
        return TrackingSettings(mlflow_uri=resolved.tracking_uri if resolved.track == "mlflow" else None,
                                tensorboard=resolved.tensorboard, results_dir=resolved.results_dir)  # fmt: skip

    def stages(self) -> StageSettings:
        """The settings object of every stage of the run, derived here and nowhere else.

        The extraction gets the configured ``--precision`` and ``--runtime``, which it refuses while ``auto``:
        ``StageSettings.computed`` adds what they resolved to (``benchmark.pipeline.resolve_compute``).
        """
        executor = self.executor_settings()
        cache_dir, results_dir = self._path_for_workers(self.cache_dir), self._path_for_workers(self.results_dir)
        weights = self.weights or "none"
        if weights not in WEIGHTS_CHOICES:
            weights = self._path_for_workers(weights)
        return StageSettings(
            executor=executor,
            labels=self.label_settings(),
            external=self.external_settings(),
            data=DataSettings(
                min_side=self.min_side(), val_fraction=self.val_fraction, test_fraction=self.test_fraction,
                val_source=self.val_source, limit_per_class=self.limit_per_class, leakage=self.leakage,
                seed=self.seed, cache_dir=cache_dir, progress=self.progress, rehash=self.rehash, views=self.views,
            ),
            extract=ExtractSettings(
                weights=weights, batch_size=self.extract_batch_size,
                shard_size=self.extract_shard_size, seed=self.seed, precision=self.precision,
                jit_compile=self.jit_compile, runtime=self.runtime, pixel_cache=self.pixel_cache,
                cache_dir=cache_dir, progress=self.progress, dicom=self.dicom_settings(),
            ),
            sweep=SweepSettings(
                heads=tuple(self.head_grid()), probes=tuple(self.probe_grid()), select_by=self.select_by,
                head_workers=self.head_workers, results_dir=results_dir, cache_dir=cache_dir,
                progress=self.progress,
            ),
            finetune=FinetuneRun(
                model=self.finetune_settings(), weights=weights, results_dir=results_dir,
                cache_dir=cache_dir, progress=self.progress, dicom=(self.dicom_window, self.dicom_voi),
            ) if self.finetune else None,
            crossval=CrossValSettings(
                folds=self.cv, repeats=self.cv_repeats, seed=self.seed, val_fraction=self.val_fraction,
            ) if self.cv else None,
            report=ReportSettings(
                sort_metric=self.sort_metric, select_by=self.select_by, target_sensitivity=self.target_sensitivity,
                bootstrap=self.bootstrap, seed=self.seed, random_init=self.weights == "none",
                limit_per_class=self.limit_per_class, subgroups=self.subgroups, plots=self.plots,
            ),
            tracking=self.tracking_settings(),
        )  # fmt: skip

    def dicom_settings(self) -> DicomSettings:
        """How DICOM files are windowed (``--dicom-window``, ``--dicom-voi``): the pixel caches' and predict's."""
        return DicomSettings(window=self.dicom_window, voi=self.dicom_voi)

    def _path_for_workers(self, path: str) -> str:
        """``path`` as the stages use it: absolute on a cluster, where a worker's working folder is not ours."""
        return str(Path(path).resolve()) if self.executor_settings().distributed else path

    def finetune_settings(self) -> FinetuneSettings:
        """The fine-tuning model's settings, every value as given (nothing capped)."""
        return FinetuneSettings(
            layers=str(self.finetune_layers), lr=self.finetune_lr, lr_factor=self.finetune_lr_factor,
            epochs=self.finetune_epochs, sizes=self.finetune_sizes, augment=self.augment,
            batch_size=self.finetune_batch_size, patience=self.finetune_patience, class_weight=self.class_weight,
            seed=self.seed,
        )  # fmt: skip

    def to_json(self) -> dict:
        """Every field as a JSON value (tuples become lists), for ``run.json``; ``from_json`` reads it back."""
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict) -> RunConfig:
        """The config a run wrote into its ``run.json``; keys of other versions are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in values.items() if name in known})

    @staticmethod
    def display(values: dict) -> dict:
        """``to_json`` values for display: a list becomes its values joined by spaces ("default" when empty)."""
        return {name: " ".join(map(str, v)) or "default" if isinstance(v, list | tuple) else v
                for name, v in values.items()}  # fmt: skip


# Derived from the fields' declarations (features.options): a new option is one field.
TUPLE_FIELDS = tuple(one.name for one in fields(RunConfig) if annotation(one)[1])
NUMBER_RANGES = number_ranges(RunConfig)  # every number option but the sizes, the seed and fine-tuning's
CHOICES = choices_of(RunConfig)
# The options that act only when fine-tuning: the fine-tuning group's, but --finetune.
FINETUNE_FIELDS = tuple(one.name for one, declared_as in declared(RunConfig)
                        if declared_as.group == FINETUNE_GROUP and one.name != "finetune")  # fmt: skip


@dataclass(frozen=True)
class StageSettings:
    """One settings object per stage of a run, all derived from one ``RunConfig`` by ``RunConfig.stages``."""

    executor: ExecutorSettings  # where extraction, head groups and fine-tuning run
    labels: LabelSettings
    external: ExternalSettings | None  # None: no external test
    data: DataSettings
    extract: ExtractSettings
    sweep: SweepSettings
    finetune: FinetuneRun | None  # None: no fine-tuning stage
    report: ReportSettings
    crossval: CrossValSettings | None = None  # None: no cross-validation of the heads
    tracking: TrackingSettings = TrackingSettings()  # where the finished run is logged (none by default)

    def computed(self, compute: ComputePlan) -> StageSettings:
        """These settings with what ``--precision`` and ``--runtime`` resolved to (``benchmark.pipeline``): the
        stages are derived once, before the run resolves them (which needs the data read and the folders locked)."""
        return replace(self, extract=replace(self.extract, compute=compute))


_TYPE_CHECKS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
}


def _check_type(one: Field, value) -> str | None:
    """Why ``value`` does not fit the RunConfig field ``one``, or None."""
    base, many, optional = annotation(one)
    check, words = _TYPE_CHECKS[base]
    if many:
        items = value if isinstance(value, list) else [value]
        return None if all(check(v) for v in items) else f"{one.name} must be {words} or a list of them, not {value!r}"
    if check(value):
        return None
    return f"{one.name} must be {words}{' (or left out)' if optional else ''}, not {value!r}"


def load_toml(path: str | Path) -> dict:
    """Settings from a TOML file; an unknown key or a value of the wrong type fails, naming what is valid.

    ``tomllib`` only ever builds strings, numbers, booleans, dates, lists and
    tables, so a config file cannot run code.
    """
    try:
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from error
    known = {one.name: one for one in fields(RunConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} in {path}; valid keys: {', '.join(sorted(known))}")
    for name, value in values.items():
        problem = _check_type(known[name], value)
        if problem:
            raise ValueError(f"{path}: {problem}")
    return values
