"""Interrupted and damaged runs: kill -9 then rerun gives the uninterrupted results; bad caches are rebuilt."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import pandas as pd
import pytest
from conftest import run_small_benchmark

from backbones import build_backbone, get_backbone, resolve_weights, save_weights_file
from features import cache as cache_module
from features import extract as extract_module
from features.cache import cache_key
from features.data.dataset import scan_dataset
from features.extract import feature_key_parts

REPO = Path(__file__).resolve().parent.parent
METRIC_COLUMNS = ["backbone", "image_size", "lr", "dropout", "task", "accuracy", "sensitivity", "specificity", "auc"]


def _arguments(root: Path, out: Path) -> list[str]:
    return [
        "--data", str(root), "--weights", "none",
        "--backbones", "MobileNetV2", "--image-size", "32", "40", "--lr", "1e-3", "1e-2", "--dropout", "0.2",
        "--l2", "0", "--no-probe", "--epochs", "6", "--patience", "3", "--no-progress", "--head-workers", "1",
        "--extract-batch-size", "4", "--extract-shard-size", "8", "--results-dir", str(out / "results"),
        "--cache-dir", str(out / "cache"),
        # Independent runs are compared: auto's measured choices could differ between them (the rerun after the
        # kill keeps its own through the cache's precision.json), so precision and runtime are fixed.
        "--precision", "float32", "--runtime", "keras",
    ]  # fmt: skip


def _run_to_the_end(root: Path, out: Path) -> None:
    """The command run to the end in this process: only the killed runs need a process of their own, and each
    process would import TensorFlow again (seconds of the suite's time). A rerun after a kill is a new run either
    way: the kernel released the killed process's locks."""
    import run_benchmark

    assert run_benchmark.main(_arguments(root, out)) == 0


def _kill_when(root: Path, out: Path, ready: Callable[[], bool]) -> bool:
    """Start the command in a process of its own and SIGKILL it as soon as ``ready()``; False if it ended first."""
    command = [sys.executable, str(REPO / "run_benchmark.py"), *_arguments(root, out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if ready():
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.01)
        return False
    finally:
        if process.poll() is None:
            process.kill()


def _same_results(a: Path, b: Path) -> None:
    board_a, board_b = (pd.read_csv(folder / "results" / "leaderboard.csv") for folder in (a, b))
    pd.testing.assert_frame_equal(board_a[METRIC_COLUMNS], board_b[METRIC_COLUMNS], rtol=1e-6)
    pd.testing.assert_frame_equal(
        pd.read_csv(a / "results" / "grid.csv"), pd.read_csv(b / "results" / "grid.csv"), rtol=1e-6
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(a / "results" / "predictions.csv"), pd.read_csv(b / "results" / "predictions.csv"), rtol=1e-6
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path]:
    """The data and one uninterrupted run of the command."""
    from conftest import make_kermany

    base = tmp_path_factory.mktemp("faults")
    root = make_kermany(base / "data", {"train": 12, "val": 2, "test": 6})
    _run_to_the_end(root, base / "clean")
    return root, base / "clean"


@pytest.mark.slow
def test_kill_9_during_extraction_then_rerun_gives_the_same_results(uninterrupted, tmp_path: Path):
    root, clean = uninterrupted
    cache = tmp_path / "cache"

    def some_shards_done() -> bool:
        return any(cache.glob("MobileNetV2/*/shards/shard-*.npy"))

    assert _kill_when(root, tmp_path, some_shards_done), "the run ended before it could be killed"
    assert not (tmp_path / "results" / "leaderboard.csv").exists()
    _run_to_the_end(root, tmp_path)
    run_info = json.loads((tmp_path / "results" / "run.json").read_text())
    assert 0 < run_info["forward_passes"]
    _same_results(clean, tmp_path)


@pytest.mark.slow
def test_kill_9_during_the_sweep_then_rerun_gives_the_same_results(uninterrupted, tmp_path: Path):
    root, clean = uninterrupted

    def some_points_done() -> bool:
        return any((tmp_path / "results" / "heads").glob("*/point.json"))

    assert _kill_when(root, tmp_path, some_points_done), "the run ended before it could be killed"
    finished = len(list((tmp_path / "results" / "heads").glob("*/point.json")))
    _run_to_the_end(root, tmp_path)
    run_info = json.loads((tmp_path / "results" / "run.json").read_text())
    assert run_info["forward_passes"] == 0  # every feature survived the kill
    assert 0 < finished < 4 and run_info["heads_trained_this_run"] == 4 - finished
    _same_results(clean, tmp_path)


@pytest.mark.slow  # extracts and trains again after each damage
def test_damaged_feature_cache_and_grid_point_are_rebuilt(small_run, tmp_path: Path):
    small_run.copy_to(tmp_path)
    first = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    (features,) = (tmp_path / "cache").glob("MobileNetV2/*/features.npy")
    features.write_bytes(features.read_bytes()[:-100])  # truncated
    (point,) = (tmp_path / "results" / "heads").glob("*/point.json")
    point.write_text('{"status": "do')  # a torn write
    assert small_run.rerun(tmp_path) == 0
    run_info = json.loads((tmp_path / "results" / "run.json").read_text())
    assert run_info["forward_passes"] > 0 and run_info["heads_trained_this_run"] == 1
    second = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    pd.testing.assert_frame_equal(first[METRIC_COLUMNS], second[METRIC_COLUMNS], rtol=1e-6)


@pytest.mark.slow
def test_a_cache_from_another_keras_version_is_not_reused(small_run, tmp_path: Path, monkeypatch):
    small_run.copy_to(tmp_path)
    monkeypatch.setattr(keras, "__version__", "3.0.0")
    assert small_run.rerun(tmp_path) == 0
    assert json.loads((tmp_path / "results" / "run.json").read_text())["forward_passes"] > 0
    assert len(list((tmp_path / "cache").glob("MobileNetV2/*/features.npy"))) == 2


def test_other_weights_files_and_decoders_give_other_keys(kermany_root: Path, tmp_path: Path, monkeypatch):
    spec = get_backbone("MobileNetV2")
    paths = [r.path for r in scan_dataset(kermany_root).records]
    keys = set()
    for seed in (0, 1):  # two weight files of the same architecture
        model = build_backbone(spec, 32, resolve_weights(spec, "none", 32, seed=seed), seed=seed)
        save_weights_file(model, tmp_path / f"w{seed}", spec)
        source = resolve_weights(spec, str(tmp_path / f"w{seed}"), 32)
        keys.add(cache_key(feature_key_parts(spec, source, 32, kermany_root, paths)))
    monkeypatch.setattr(extract_module, "DECODE_VERSION", "another-decoder")
    keys.add(cache_key(feature_key_parts(spec, source, 32, kermany_root, paths)))
    assert len(keys) == 3


@pytest.mark.slow
@pytest.mark.parametrize("pixel_cache", [True, False])
def test_a_full_disk_ends_with_a_clear_error_and_no_trusted_file(
    kermany_root: Path, tmp_path: Path, monkeypatch, capsys, pixel_cache: bool
):
    def disk_full(fd, data, position):
        os.write(fd, b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.os, "pwrite", disk_full)
    extra = () if pixel_cache else ("--no-pixel-cache",)
    assert run_small_benchmark(kermany_root, tmp_path, *extra) == 1
    err = capsys.readouterr().err
    assert "disk is full" in err and "run the same command again" in err
    left = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert not [name for name in left if name.endswith(".npy") or ".tmp" in name or name == "manifest.json"]
    monkeypatch.undo()
    assert run_small_benchmark(kermany_root, tmp_path, *extra) == 0
