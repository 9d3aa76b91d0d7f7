"""The genuine ImageNet weights in ../shared/weights: they load exactly, they transfer, they never mix in the cache.

Skipped where the folder (or the real data, for the transfer test) is absent.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REAL_DATA, slow_except

from backbones import BACKBONES, build_backbone, resolve_weights
from benchmark.evaluation.metrics import roc_auc
from benchmark.settings import HeadSettings
from benchmark.training.probe import fit_probes
from features.data.dataset import make_splits, scan_dataset
from features.extract import extract_features
from features.settings import ExtractSettings

WEIGHTS = REAL_DATA.parent.parent / "weights"
# Backbone -> the file of ../shared/weights it resolves to (see that folder's README).
SHARED_FILES = {
    "MobileNetV2": "MobileNetV2.weights.h5",
    "MobileNetV2-0.35": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
    "MobileNetV2-0.5": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5",
    "MobileNet-0.25": "mobilenet_2_5_224_tf_no_top.h5",
}

pytestmark = pytest.mark.real_data


@pytest.fixture
def weights_dir() -> Path:
    if not WEIGHTS.is_dir():
        pytest.skip(f"ImageNet weights not found at {WEIGHTS}")
    return WEIGHTS


def _tensor_counts(arrays) -> Counter:
    """Each tensor as (shape, hash of its float32 bytes), counted: equal counters mean equal tensors."""
    counts = Counter()
    for array in arrays:
        array = np.ascontiguousarray(array, dtype=np.float32)
        counts[(array.shape, hashlib.sha256(array.tobytes()).hexdigest())] += 1
    return counts


def _file_tensors(path: Path) -> list[np.ndarray]:
    tensors = []
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda _, item: tensors.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    return tensors


@pytest.mark.parametrize("name", slow_except(SHARED_FILES, "MobileNet-0.25"))
def test_shared_weights_load_with_every_tensor_equal_to_the_file(name: str, weights_dir: Path):
    spec = BACKBONES[name]
    source = resolve_weights(spec, str(weights_dir), 224)
    assert source.path == weights_dir / SHARED_FILES[name]
    model = build_backbone(spec, 224, source, seed=123)
    model_tensors = _tensor_counts(w.numpy() for w in model.weights)
    # Every variable of the model is a tensor of the file and every tensor of the file is used: nothing is
    # left at its random initial value, nothing is dropped.
    assert model_tensors == _tensor_counts(_file_tensors(source.path))
    assert sum(model_tensors.values()) == len(model.weights)


def _probe_scores(features: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> tuple[float, float]:
    """Validation log loss and normal-vs-pneumonia AUC of a logistic-regression probe (l2 0.1)."""
    probe = fit_probes(features["train"], labels["train"], features["val"], labels["val"], 3,
                       [HeadSettings(kind="logreg", l2=0.1)], [Path(features["tmp"])])[0]  # fmt: skip
    probabilities = np.asarray(probe.model.predict(features["val"], verbose=0))
    return probe.history["val_loss"][0], roc_auc(labels["val"] > 0, probabilities[:, 1:].sum(axis=1))


@pytest.mark.slow
def test_imagenet_features_beat_random_init_on_real_radiographs(weights_dir: Path, tmp_path: Path):
    """MobileNetV2-0.35 at 128 px, 40 train and 40 validation images per class, the same linear probe on top.

    Measured when this test was written (2 CPU cores, TensorFlow backend): validation loss 0.895 (ImageNet)
    against 1.174 (random init), normal-vs-pneumonia AUC 0.949 against 0.815. The margins asserted are half of
    those (0.14 and 0.065).
    """
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    dataset = make_splits(scan_dataset(REAL_DATA), val_fraction=0.5, limit_per_class=40, seed=0)
    spec = BACKBONES["MobileNetV2-0.35"]
    paths = [record.path for record in dataset.records]
    labels = {split: dataset.labels(split) for split in ("train", "val")}
    scores = {}
    for weights in (str(weights_dir), "none"):
        source = resolve_weights(spec, weights, 128)
        features, _ = extract_features(spec, source, 128, dataset.root, paths,
                                       ExtractSettings(pixel_cache=False, cache_dir=str(tmp_path / "cache"),
                                                       progress=False))  # fmt: skip
        by_split = {split: np.asarray(features[dataset.indices(split)]) for split in ("train", "val")}
        by_split["tmp"] = tmp_path / f"probe-{source.kind}"
        scores[source.kind] = _probe_scores(by_split, labels)
    (imagenet_loss, imagenet_auc), (random_loss, random_auc) = scores["file"], scores["none"]
    print(f"val loss {imagenet_loss:.3f} vs {random_loss:.3f}; AUC {imagenet_auc:.3f} vs {random_auc:.3f}")
    assert imagenet_loss < random_loss - 0.14
    assert imagenet_auc > random_auc + 0.065


@pytest.mark.slow
def test_cache_never_mixes_features_of_different_weight_files(weights_dir: Path, tmp_path: Path, kermany_root):
    """Two folders hold a file of the same name with different tensors: each run gets its own features."""
    spec = BACKBONES["MobileNetV2-0.35"]
    name = SHARED_FILES[spec.name]
    real, other = tmp_path / "real", tmp_path / "other"
    for folder in (real, other):
        folder.mkdir()
        shutil.copy(weights_dir / name, folder / name)
    with h5py.File(other / name, "r+") as handle:  # the same file, one tensor changed (say, fine-tuned elsewhere)
        kernel = handle["Conv1/Conv1/kernel:0"]
        kernel[...] = kernel[()] * 0.5
    dataset = scan_dataset(kermany_root)
    paths = [record.path for record in dataset.records][:12]
    settings = ExtractSettings(pixel_cache=False, cache_dir=str(tmp_path / "cache"), progress=False)
    first, first_stats = extract_features(spec, resolve_weights(spec, str(real), 64), 64, dataset.root, paths,
                                          settings)  # fmt: skip
    second, second_stats = extract_features(spec, resolve_weights(spec, str(other), 64), 64, dataset.root, paths,
                                            settings)  # fmt: skip
    assert first_stats.key != second_stats.key and not second_stats.from_cache
    assert not np.allclose(np.asarray(first), np.asarray(second))
    again, again_stats = extract_features(spec, resolve_weights(spec, str(real), 64), 64, dataset.root, paths,
                                          settings)  # fmt: skip
    assert again_stats.from_cache
    np.testing.assert_array_equal(np.asarray(again), np.asarray(first))
