"""Hostile caches: one changed byte in any file a run keeps under --cache-dir is found before it can change a number
(said in one line, then rebuilt); an image replaced under the same size and time is found by ``audit --rehash``;
an external test's extraction is counted as such."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import DEFAULT_SMALL, make_kermany, run_small_benchmark, write_image
from PIL import Image
from test_cache_extract import SPEC, CountingModel, _extract, _paths

from features import runtime as runtime_module
from features.cache import FeatureCache
from features.data import audit
from features.runtime import build_forward, openvino_installed

needs_openvino = pytest.mark.skipif(not openvino_installed(), reason="the openvino package is not installed")
OPENVINO = ("--runtime", "openvino")

# Every file an OpenVINO small run leaves under --cache-dir with bytes in it: (glob, whether the rerun extracts only
# if the features are gone, whether a changed byte is reported). The entry locks are empty files.
KEPT = [
    ("precision.json", False, True),
    ("audit/*.json", False, True),
    ("MobileNetV2/*/features.npy", False, True),
    ("MobileNetV2/*/manifest.json", False, True),
    ("pixels/32px/*/pixels.npy", True, True),
    ("pixels/32px/*/manifest.json", True, True),
    ("openvino/MobileNetV2/*/model.xml", True, True),
    ("openvino/MobileNetV2/*/model.bin", True, True),
    ("openvino/MobileNetV2/*/manifest.json", True, True),
    (".cxr-bench.lock", False, False),  # the holder of the run's lock, named in a message: nothing is computed from it
]


def _flip(path: Path) -> None:
    """Flip the lowest bit of the middle byte of ``path``."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _numbers(results: Path) -> pd.DataFrame:
    """The leaderboard without the columns that name the run's folders and versions."""
    board = pd.read_csv(results / "leaderboard.csv")
    return board[[c for c in board.columns if not c.startswith(("config_", "version_", "git"))]]


def _fixed_probe(monkeypatch) -> None:
    # Where the CPU has native bfloat16, auto times a probe: fixed timings make a re-measured choice the same.
    monkeypatch.setattr(runtime_module, "probe_seconds", lambda runtime, precision: 1.0)
    monkeypatch.setenv("CXR_BENCH_HOME", "off")  # and no choice of another test's timings from the session's memo
    # and auto measures even a run this small, so the cache holds a precision.json to damage.
    monkeypatch.setattr(runtime_module, "KERAS_BELOW", 0)
    monkeypatch.setattr(runtime_module, "MEASURE_FROM", 0)


@pytest.fixture(scope="module")
def clean_openvino_run(tmp_path_factory) -> tuple[Path, Path]:
    """The data and a finished small OpenVINO run (so its IR is in the cache), once for this module."""
    base = tmp_path_factory.mktemp("hostile_cache")
    root = make_kermany(base / "data", {"train": 12, "val": 2, "test": 6})
    with pytest.MonkeyPatch.context() as monkeypatch:
        _fixed_probe(monkeypatch)
        assert run_small_benchmark(root, base / "clean", *OPENVINO, preset=DEFAULT_SMALL) == 0
    return root, base / "clean"


@needs_openvino
@pytest.mark.slow  # one small run
def test_every_file_the_run_keeps_is_in_the_list_of_flipped_files(clean_openvino_run):
    _, clean = clean_openvino_run
    kept = {path for path in (clean / "cache").rglob("*") if path.is_file()}
    listed = {path for pattern, _, _ in KEPT for path in (clean / "cache").glob(pattern)}
    assert all(path.stat().st_size > 0 for path in listed)
    unlisted = kept - listed
    assert all(path.name == ".cxr-bench.lock" and path.stat().st_size == 0 for path in unlisted), unlisted


@needs_openvino
@pytest.mark.slow  # a rerun per file, some converting the backbone again: about 3 minutes in all
@pytest.mark.parametrize(("pattern", "extracts", "reported"), KEPT, ids=[pattern for pattern, _, _ in KEPT])
def test_a_changed_byte_in_any_cached_file_is_said_and_rebuilt_never_used(
    clean_openvino_run, tmp_path: Path, capsys, monkeypatch, pattern: str, extracts: bool, reported: bool
):
    root, clean = clean_openvino_run
    shutil.copytree(clean / "cache", tmp_path / "cache")
    (flipped,) = (tmp_path / "cache").glob(pattern)
    _flip(flipped)
    if extracts:  # the pixels and the IR are read only when features are extracted: as for a new image size
        shutil.rmtree(next((tmp_path / "cache" / "MobileNetV2").glob("*/features.npy")).parent)
    _fixed_probe(monkeypatch)
    capsys.readouterr()
    assert run_small_benchmark(root, tmp_path, *OPENVINO, preset=DEFAULT_SMALL) == 0
    pd.testing.assert_frame_equal(_numbers(tmp_path / "results"), _numbers(clean / "results"), check_exact=True)
    lines = capsys.readouterr().out.splitlines()
    warnings = [number for number, line in enumerate(lines) if line.startswith("warning:")]
    if not reported:
        assert warnings == []
        return
    said = [n for n in warnings if str(flipped) in lines[n] and "rebuilt" in lines[n]]
    assert len(said) == 1, lines
    assert said[0] < min(n for n, line in enumerate(lines) if line.startswith("wrote "))


@needs_openvino
@pytest.mark.slow  # three conversions: about 7 s
def test_a_damaged_or_unsealed_openvino_model_is_converted_again_before_it_is_compiled(tmp_path: Path, capsys):
    def make_model():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8, 8, 3))
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs)))

    ir_file = tmp_path / "openvino" / "Tiny" / "key" / "model.xml"
    batch = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)

    def features() -> np.ndarray:
        return build_forward("openvino", make_model, precision="float32", batch_shape=batch.shape, ir_file=ir_file)(
            batch
        )

    clean = features()
    assert capsys.readouterr().out == ""
    bin_file = ir_file.with_suffix(".bin")
    data = bytearray(bin_file.read_bytes())
    data[len(data) // 2] ^= 0x40  # a high bit of one weight: every feature would move
    bin_file.write_bytes(bytes(data))
    np.testing.assert_array_equal(features(), clean)
    out = capsys.readouterr().out
    assert out.startswith(f"warning: {bin_file} is damaged") and "rebuilt" in out and out.count("\n") == 1
    (ir_file.parent / "manifest.json").unlink()  # as a version before manifests left it: it cannot be checked
    np.testing.assert_array_equal(features(), clean)
    assert "manifest.json is missing" in capsys.readouterr().out
    np.testing.assert_array_equal(features(), clean)
    assert capsys.readouterr().out == ""  # whole again: compiled without a word


def test_a_damaged_shard_of_a_killed_extraction_is_extracted_again(kermany_root: Path, tmp_path: Path, capsys):
    paths, cache = _paths(kermany_root), FeatureCache(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        _extract(kermany_root, paths, cache, CountingModel(fail_after=3), batch_size=8, shard_size=16)
    (shard,) = (tmp_path / "cache" / SPEC.name).glob("*/shards/shard-*.npy")
    _flip(shard)
    resumed_model = CountingModel()
    resumed, _ = _extract(kermany_root, paths, cache, resumed_model, batch_size=8, shard_size=16)
    clean, _ = _extract(kermany_root, paths, FeatureCache(tmp_path / "clean"), CountingModel(), batch_size=8)
    np.testing.assert_array_equal(resumed, clean)
    assert resumed_model.calls == -(-len(paths) // 8)
    out = capsys.readouterr().out
    assert out.startswith(f"warning: {shard} is damaged") and "rebuilt" in out


def test_damaged_remembered_choices_are_said_and_measured_again(tmp_path: Path, monkeypatch, capsys):
    from backbones import PrecisionChoice

    monkeypatch.setenv("CXR_BENCH_HOME", "off")  # the cache folder's memo alone (the machine-wide one: below)
    calls = []
    monkeypatch.setattr(runtime_module, "resolve_precision",
                        lambda requested, seconds: calls.append(requested) or PrecisionChoice(requested, "bfloat16",
                                                                                              "measured"))  # fmt: skip
    runtime_module.resolve_run_precision("auto", "keras", tmp_path)
    memo = tmp_path / "precision.json"
    memo.write_text(memo.read_text().replace("bfloat16", "float32"))  # a changed choice, still valid JSON
    assert runtime_module.resolve_run_precision("auto", "keras", tmp_path).precision == "bfloat16"
    assert calls == ["auto", "auto"]
    out = capsys.readouterr().out
    assert out.startswith(f"warning: {memo} is damaged (1 remembered choice(s)") and "rebuilt" in out
    memo.write_text("{not json")
    runtime_module.resolve_run_precision("auto", "keras", tmp_path)
    assert calls == ["auto"] * 3 and f"warning: {memo} is damaged" in capsys.readouterr().out
    assert "remembered in" in runtime_module.resolve_run_precision("auto", "keras", tmp_path).reason
    assert capsys.readouterr().out == ""


def _replace_keeping_size_and_time(image: Path) -> None:
    """Other pixels in ``image``, its size and modification time as they were (JPEG ignores bytes after its end)."""
    stat = image.stat()
    other = np.asarray(Image.open(image)).copy()
    other[: other.shape[0] // 2] = 255 - other[: other.shape[0] // 2]
    for quality in range(95, 10, -5):
        buffer = io.BytesIO()
        Image.fromarray(other).save(buffer, format="JPEG", quality=quality)
        if buffer.tell() <= stat.st_size:
            break
    image.write_bytes(buffer.getvalue().ljust(stat.st_size, b"\0"))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert image.stat().st_size == stat.st_size and image.stat().st_mtime_ns == stat.st_mtime_ns


@pytest.mark.slow  # four extraction-only runs
def test_an_image_replaced_under_the_same_size_and_time_is_found_by_rehash(kermany_root: Path, tmp_path: Path, capsys):
    assert run_small_benchmark(kermany_root, tmp_path, "--extract-only") == 0
    image = "train/NORMAL/IM-tr0000-0001.jpeg"
    _replace_keeping_size_and_time(kermany_root / image)
    capsys.readouterr()
    # Without --rehash the cache keys trust size and modification time: the stale features are read back.
    assert run_small_benchmark(kermany_root, tmp_path, "--extract-only") == 0
    assert "features from cache, 0 forward passes" in capsys.readouterr().out
    cache = tmp_path / "cache"
    assert audit.main([str(kermany_root), "--cache-dir", str(cache), "--rehash", "--min-side", "32"]) == 0
    out = capsys.readouterr().out
    assert "--rehash: 1 image(s) changed though their size and modification time did not" in out
    assert f"  {image}\n" in out and "dropped their remembered checks and the 2 cached feature and pixel" in out
    assert run_small_benchmark(kermany_root, tmp_path, "--extract-only") == 0
    assert "from cache" not in capsys.readouterr().out
    assert run_small_benchmark(kermany_root, tmp_path / "fresh", "--extract-only") == 0
    (features,) = cache.glob("MobileNetV2/*/features.npy")  # the stale entry was dropped
    (fresh,) = (tmp_path / "fresh" / "cache").glob("MobileNetV2/*/features.npy")
    assert features.parent.name == fresh.parent.name
    np.testing.assert_array_equal(np.load(features), np.load(fresh))
    # Nothing changed since: --rehash says so, and drops nothing.
    assert audit.main([str(kermany_root), "--cache-dir", str(cache), "--rehash", "--min-side", "32"]) == 0
    assert "every image's bytes match" in capsys.readouterr().out


def test_rehash_needs_the_cache_folder_and_the_run_can_rehash_too(kermany_root: Path, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as stopped:
        audit.main([str(kermany_root), "--rehash"])
    assert stopped.value.code == 2 and "--rehash compares with what a run remembered" in capsys.readouterr().err
    from features.data.dataset import scan_dataset

    dataset = scan_dataset(kermany_root)
    first = audit.audit_images(dataset, min_side=32, cache_dir=tmp_path, progress=False)
    image = "test/PNEUMONIA/personte0_virus_0.jpeg"
    _replace_keeping_size_and_time(kermany_root / image)
    stale = audit.audit_images(dataset, min_side=32, cache_dir=tmp_path, progress=False)
    assert stale.digests[image] == first.digests[image]  # trusted by size and time
    fresh = audit.audit_images(dataset, min_side=32, cache_dir=tmp_path, progress=False, rehash=True)
    assert fresh.digests[image] != first.digests[image]
    assert f"1 image(s) under {kermany_root} changed" in capsys.readouterr().out


def test_the_feature_key_names_each_images_contents_where_the_check_read_them(kermany_root: Path):
    from backbones import resolve_weights
    from features.cache import cache_key
    from features.extract import feature_key_parts

    paths, none = _paths(kermany_root), resolve_weights(SPEC, "none", 32)
    digests = dict.fromkeys(paths, "a" * 64)
    base = cache_key(feature_key_parts(SPEC, none, 32, kermany_root, paths, digests=digests))
    other = cache_key(feature_key_parts(SPEC, none, 32, kermany_root, paths, digests={**digests, paths[0]: "b" * 64}))
    assert base != other


@pytest.mark.slow  # two small runs
def test_an_external_test_sets_extraction_is_said_and_counted(kermany_root: Path, tmp_path: Path, capsys):
    rng = np.random.default_rng(5)
    other = tmp_path / "other"
    for label in ("normal", "bacterial", "viral"):
        for i in range(3):
            write_image(other / label / f"{label}{i}.png", label, rng)
    assert run_small_benchmark(kermany_root, tmp_path) == 0
    capsys.readouterr()
    assert run_small_benchmark(kermany_root, tmp_path, "--external-test", str(other)) == 0
    out = capsys.readouterr().out
    assert "MobileNetV2-32px (internal): features from cache, 0 forward passes" in out
    assert "MobileNetV2-32px (external test): features from 1 forward pass (9 images)" in out
    run_info = json.loads((tmp_path / "results" / "run.json").read_text())
    assert run_info["forward_passes"] == 1


def test_the_extraction_line_counts_passes_and_names_the_set():
    from features.extract import BackboneFeatures, ExtractionStats, extraction_lines

    def one(stats: ExtractionStats) -> BackboneFeatures:
        return BackboneFeatures("MobileNetV2", 32, "random-init:seed=0", None, stats)

    cached, extracted = one(ExtractionStats(60, True)), one(ExtractionStats(9, False, 1, seconds=0.5))
    assert extraction_lines([cached]) == ["MobileNetV2-32px: features from cache, 0 forward passes (60 images)"]
    internal, external = extraction_lines([cached], [extracted])
    assert internal.startswith("MobileNetV2-32px (internal): features from cache")
    assert external.startswith("MobileNetV2-32px (external test): features from 1 forward pass (9 images), 18.0 img/s")
