"""Extraction levers: the shared uint8 pixel cache, streamed cache writes, precision, FLOP counting."""

import dataclasses
import os
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import BUILT_ONCE, slow_except

from backbones import BACKBONES, build_backbone, get_backbone, model_flops, resolve_weights
from benchmark.speed.bench_extract import cosine_rows
from features.cache import atomic_save_rows, cache_key
from features.data.dataset import scan_dataset
from features.data.images import load_image
from features.extract import extract_features
from features.pixels import PixelCache, pixel_key_parts
from features.settings import ExtractSettings

SPEC = dataclasses.replace(get_backbone("MobileNetV2"), feature_size=3)


class MeanModel:
    """Stands in for a backbone: per-channel means of the preprocessed batch."""

    def predict_on_batch(self, batch):
        return batch.mean(axis=(1, 2))


def _paths(root: Path) -> list[str]:
    return [r.path for r in scan_dataset(root).records]


def test_pixel_cache_holds_what_the_decoder_gives_and_is_reused(kermany_root: Path, tmp_path: Path):
    paths, cache = _paths(kermany_root), PixelCache(tmp_path)
    reader, seconds = cache.build(32, kermany_root, paths, progress=False, chunk=7)
    assert seconds > 0 and len(reader) == len(paths)
    rows = reader.read(3, 11)
    np.testing.assert_array_equal(rows, np.stack([load_image(kermany_root / p, 32) for p in paths[3:11]]))
    reader.close()
    again, seconds = cache.build(32, kermany_root, paths, progress=False)
    assert seconds == 0.0  # nothing decoded the second time
    np.testing.assert_array_equal(again.read(0, len(paths))[3:11], rows)
    again.close()
    assert cache.open(48, kermany_root, paths) is None  # another size is another entry
    touched = kermany_root / paths[5]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    assert cache.open(32, kermany_root, paths) is None  # a touched file invalidates the entry


def test_truncated_pixel_cache_is_not_trusted(kermany_root: Path, tmp_path: Path):
    paths, cache = _paths(kermany_root), PixelCache(tmp_path)
    cache.build(32, kermany_root, paths, progress=False)[0].close()
    data_file = next(tmp_path.rglob("pixels.npy"))
    os.truncate(data_file, data_file.stat().st_size - 10)
    assert cache.open(32, kermany_root, paths) is None


def test_a_killed_builds_temp_file_is_cleared(kermany_root: Path, tmp_path: Path):
    paths, cache = _paths(kermany_root), PixelCache(tmp_path)
    folder = cache.entry(32, cache_key(pixel_key_parts(32, kermany_root, paths)))
    folder.mkdir(parents=True)
    (folder / ".pixels.npy.killed.tmp.npy").write_bytes(b"half an array")
    cache.build(32, kermany_root, paths, progress=False)[0].close()
    # The entry's lock file (features.cache.entry_lock) stays: it is empty and reused by the next writer.
    assert sorted(p.name for p in folder.iterdir()) == [".cxr-bench.lock", "manifest.json", "pixels.npy"]


def test_features_through_the_pixel_cache_equal_direct_decoding(kermany_root: Path, tmp_path: Path):
    paths = _paths(kermany_root)
    source = resolve_weights(SPEC, "none", 32)
    decoded = ExtractSettings(batch_size=5, shard_size=10, pixel_cache=False, cache_dir=str(tmp_path / "a"),
                              progress=False)  # fmt: skip
    direct, _ = extract_features(SPEC, source, 32, kermany_root, paths, decoded, build=MeanModel)
    pixels = dataclasses.replace(decoded, pixel_cache=True, cache_dir=str(tmp_path / "b"))
    cached, stats = extract_features(SPEC, source, 32, kermany_root, paths, pixels, build=MeanModel)
    assert stats.decode_seconds > 0
    np.testing.assert_array_equal(direct, cached)
    # A second backbone of the same size reads the pixels instead of decoding them.
    other = dataclasses.replace(SPEC, name="Other")
    _, stats = extract_features(other, source, 32, kermany_root, paths, pixels, build=MeanModel)
    assert stats.decode_seconds == 0.0 and stats.forward_batches == -(-len(paths) // 5)


def test_rows_written_in_chunks_make_the_same_npy_as_np_save(tmp_path: Path):
    array = np.arange(7 * 3 * 2, dtype=np.float32).reshape(7, 3, 2)
    atomic_save_rows(tmp_path / "a.npy", array.shape, "float32", [array[:3], array[3:4], array[4:]])
    np.save(tmp_path / "b.npy", array)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    atomic_save_rows(tmp_path / "empty.npy", (0, 5), "float32", [])
    assert np.load(tmp_path / "empty.npy").shape == (0, 5)


@pytest.mark.parametrize("rows", [[np.zeros((2, 3))], [np.zeros((3, 3)), np.zeros((2, 3))], [np.zeros((3, 4))]])
def test_wrong_row_count_or_shape_fails_and_leaves_nothing(tmp_path: Path, rows):
    with pytest.raises(ValueError):
        atomic_save_rows(tmp_path / "x.npy", (3, 3), "float32", rows)
    assert list(tmp_path.iterdir()) == []


def test_flops_of_each_layer_type_match_hand_counts():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)  # 8*8 positions * 3*3*4 * 6 multiply-adds
    x = keras.layers.Conv2D(6, 1, groups=2)(x)  # 8*8 * 1*1*3 * 6
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 4*4 * 3*3 * 6
    x = keras.layers.SeparableConv2D(5, 3, padding="valid")(x)  # 2*2 * (3*3*6 + 6*5)
    x = keras.layers.Dense(3)(x)  # at each of the 2*2 positions (ConvNeXt's 1x1 convolutions): 2*2 * 5*3
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(7)(x)  # 3 * 7
    model = keras.Model(inputs, outputs)
    macs = 64 * 36 * 6 + 64 * 3 * 6 + 16 * 9 * 6 + 4 * (54 + 30) + 4 * 15 + 21
    assert model_flops(model) == 2 * macs


def test_resnet50_flops_match_the_published_figure():
    # He et al. 2016, Table 1: 3.8e9 multiply-adds for ResNet-50 at 224 px, classifier included.
    model = build_backbone(get_backbone("ResNet50"), 224, resolve_weights(get_backbone("ResNet50"), "none", 224))
    assert model_flops(model) / 2 == pytest.approx(3.8e9, rel=0.1)


def test_unknown_precision_names_the_valid_ones():
    spec = get_backbone("MobileNetV2")
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        build_backbone(spec, 32, resolve_weights(spec, "none", 32), precision="int4")


@pytest.mark.parametrize("name", slow_except([name for name in BACKBONES if name not in BUILT_ONCE], "VGG16"))
def test_bfloat16_features_point_the_same_way_as_float32(name: str):
    spec = get_backbone(name)
    size = spec.min_size
    source = resolve_weights(spec, "none", size)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    # Plain calls, not predict_on_batch: one forward pass is not worth tracing a graph for.
    full = build_backbone(spec, size, source, precision="float32")(spec.preprocess(pixels.copy()), training=False)
    assert tuple(full.shape) == (2, spec.feature_size)
    half_model = build_backbone(spec, size, source, precision="bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert half_model.layers[-1].compute_dtype == "bfloat16"
    half = half_model(spec.preprocess(pixels.copy()), training=False)
    similarity = cosine_rows(keras.ops.convert_to_numpy(full), keras.ops.convert_to_numpy(half).astype(np.float32))
    assert similarity.min() > 0.98


def test_bench_extract_warms_every_variant_up_then_alternates_their_order():
    from types import SimpleNamespace

    from benchmark.speed.bench_extract import Variant, measure, summary, summary_rows

    calls = []

    class FakeBench:
        paths, args = ["x"] * 4, SimpleNamespace(batch_size=1, pixel_cache="off")

        def run(self, variant, paths=None):
            calls.append((variant.name, len(paths or self.paths)))
            return np.ones((len(paths or self.paths), 2)), {"a": 2.0, "b": 1.0}[variant.name]

    variants = [Variant("a", "textbook", "keras", "float32", ""), Variant("b", "harness", "keras", "bfloat16", "")]
    measure(FakeBench(), variants, rounds=3)
    assert calls == [("a", 2), ("b", 2), ("a", 4), ("b", 4), ("b", 4), ("a", 4), ("a", 4), ("b", 4)]
    table = summary(summary_rows(variants, 4, {"float32": 100.0, "bfloat16": 200.0}, np.ones((4, 2))))
    assert "| b " in table and "2.00" in table  # b took half a's seconds in every round
