"""Feature cache keys, atomic writes, resumable extraction, zero forward passes on reuse."""

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from backbones import get_backbone, resolve_weights
from features import cache as cache_module
from features.cache import FeatureCache, atomic_save_npy, cache_key
from features.data.dataset import scan_dataset
from features.extract import extract_features, feature_key_parts
from features.settings import ExtractSettings

SPEC = dataclasses.replace(get_backbone("MobileNetV2"), feature_size=4)


class CountingModel:
    """Stands in for a backbone: 4 features per image, counts its forward passes."""

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def predict_on_batch(self, batch):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        return np.stack(
            [batch.mean(axis=(1, 2, 3)), batch.std(axis=(1, 2, 3)), batch[:, 0, 0, 0], batch.max((1, 2, 3))], 1
        )


def _extract(root, paths, cache, model, **settings):
    source = resolve_weights(SPEC, "none", 32)
    settings = ExtractSettings(cache_dir=str(cache.root), pixel_cache=False, progress=False, **settings)
    return extract_features(SPEC, source, 32, root, paths, settings, build=lambda: model)


def _paths(root: Path) -> list[str]:
    return [r.path for r in scan_dataset(root).records]


def test_second_run_does_no_forward_pass(kermany_root: Path, tmp_path: Path):
    paths, cache = _paths(kermany_root), FeatureCache(tmp_path / "cache")
    first_model, second_model = CountingModel(), CountingModel()
    first, stats = _extract(kermany_root, paths, cache, first_model, batch_size=8)
    assert not stats.from_cache and first_model.calls == stats.forward_batches == -(-len(paths) // 8)
    second, stats = _extract(kermany_root, paths, cache, second_model, batch_size=8)
    assert stats.from_cache and second_model.calls == 0
    assert isinstance(second, np.memmap)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (len(paths), 4) and np.all(np.isfinite(first))


def test_killed_extraction_resumes_from_finished_shards(kermany_root: Path, tmp_path: Path):
    paths, cache = _paths(kermany_root), FeatureCache(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        _extract(kermany_root, paths, cache, CountingModel(fail_after=3), batch_size=8, shard_size=16)
    resumed_model = CountingModel()
    resumed, _ = _extract(kermany_root, paths, cache, resumed_model, batch_size=8, shard_size=16)
    # One shard (2 batches) survived the kill; the rest is redone.
    assert resumed_model.calls == -(-len(paths) // 8) - 2
    clean, _ = _extract(kermany_root, paths, FeatureCache(tmp_path / "clean"), CountingModel(), batch_size=8)
    np.testing.assert_allclose(resumed, clean, rtol=1e-6)


def test_key_names_everything_that_changes_the_array(kermany_root: Path):
    paths = _paths(kermany_root)
    none = resolve_weights(SPEC, "none", 32)
    base = feature_key_parts(SPEC, none, 32, kermany_root, paths)
    variants = [
        feature_key_parts(get_backbone("ResNet50"), none, 32, kermany_root, paths),
        feature_key_parts(SPEC, resolve_weights(SPEC, "none", 32, seed=1), 32, kermany_root, paths),
        feature_key_parts(SPEC, resolve_weights(SPEC, "imagenet", 32), 32, kermany_root, paths),
        feature_key_parts(SPEC, none, 64, kermany_root, paths),
        feature_key_parts(dataclasses.replace(SPEC, preprocess_mode="caffe"), none, 32, kermany_root, paths),
        feature_key_parts(SPEC, none, 32, kermany_root, paths[:-1]),
        feature_key_parts(SPEC, none, 32, kermany_root, paths, precision="bfloat16"),
        feature_key_parts(SPEC, none, 32, kermany_root, paths, jit_compile=True),
        dict(base, keras="0.0.0"),
    ]
    keys = {cache_key(base)} | {cache_key(v) for v in variants}
    assert len(keys) == len(variants) + 1
    touched = kermany_root / paths[0]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    assert cache_key(feature_key_parts(SPEC, none, 32, kermany_root, paths)) != cache_key(base)


def test_untrustworthy_entries_are_not_used(tmp_path: Path):
    cache = FeatureCache(tmp_path)
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.save("B", "k", array, {})
    np.testing.assert_array_equal(cache.load("B", "k"), array)
    features = cache.entry("B", "k") / "features.npy"
    data = bytearray(features.read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last value
    features.write_bytes(bytes(data))
    assert cache.load("B", "k") is None
    features.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    assert cache.load("B", "k") is None
    cache.save("B", "k", array, {})
    (cache.entry("B", "k") / "manifest.json").unlink()  # killed before the manifest was written
    assert cache.load("B", "k") is None


def test_failed_write_leaves_neither_file_nor_temp(tmp_path: Path, monkeypatch):
    def broken_pwrite(fd, data, position):
        os.write(fd, b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module.os, "pwrite", broken_pwrite)
    with pytest.raises(OSError, match="No space"):
        atomic_save_npy(tmp_path / "features.npy", np.zeros(3))
    assert list(tmp_path.iterdir()) == []
