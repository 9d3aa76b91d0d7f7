"""Failures that must not stick or lie: failed points are retried, an all-failed sweep ends clearly,
one class is refused, outputs are readable by others."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from conftest import make_kermany, run_small_benchmark


def test_failed_points_are_retried_and_an_all_failed_sweep_ends_clearly(
    kermany_root: Path, tmp_path: Path, monkeypatch, capsys
):
    from benchmark import sweep

    def broken(*args, **kwargs):
        raise MemoryError("simulated out-of-memory in a head worker")

    monkeypatch.setattr(sweep, "train_heads", broken)
    assert run_small_benchmark(kermany_root, tmp_path) == 1
    err = capsys.readouterr().err
    assert "every grid point failed (1)" in err and "simulated out-of-memory" in err
    assert "Traceback" not in err
    (record,) = (tmp_path / "results" / "heads").glob("*/point.json")
    assert json.loads(record.read_text())["status"] == "failed"
    assert list((tmp_path / "cache").glob("MobileNetV2/*/features.npy"))  # finished work is kept
    monkeypatch.undo()
    assert run_small_benchmark(kermany_root, tmp_path) == 0  # the failure was not cached as a result
    run_info = json.loads((tmp_path / "results" / "run.json").read_text())
    assert run_info["heads_trained_this_run"] == 1 and run_info["forward_passes"] == 0
    assert json.loads(record.read_text())["status"] == "done"


def test_a_dataset_with_one_class_stops_before_extraction(tmp_path: Path, capsys):
    root = make_kermany(tmp_path / "data", {"train": 6, "val": 2, "test": 3})
    for split in ("train", "val", "test"):
        for path in (root / split / "PNEUMONIA").iterdir():
            path.unlink()
        (root / split / "PNEUMONIA").rmdir()
    assert run_small_benchmark(root, tmp_path) == 2
    assert "one class, 'normal'" in capsys.readouterr().err.lower()
    assert not (tmp_path / "cache" / "MobileNetV2").exists()


def test_outputs_respect_the_umask(kermany_root: Path, tmp_path: Path):
    previous = os.umask(0o022)
    try:
        assert run_small_benchmark(kermany_root, tmp_path) == 0
    finally:
        os.umask(previous)
    results = tmp_path / "results"
    written = [results / name for name in ("leaderboard.csv", "leaderboard.md", "grid.csv", "predictions.csv",
                                           "run.json", "skipped.csv")]  # fmt: skip
    written += list(results.glob("heads/*/point.json")) + list((tmp_path / "cache").glob("MobileNetV2/*/*.json"))
    assert len(written) >= 8
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_strict_umask_is_kept(tmp_path: Path):
    from features.cache import atomic_write_text

    previous = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600


def test_a_truncated_checkpoint_is_detected_and_the_point_retrained(kermany_root: Path, tmp_path: Path):
    import pandas as pd

    assert run_small_benchmark(kermany_root, tmp_path) == 0
    first = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    (checkpoint,) = (tmp_path / "results" / "heads").glob("*/best.keras")
    checkpoint.write_bytes(checkpoint.read_bytes()[:-200])  # point.json stays intact
    assert run_small_benchmark(kermany_root, tmp_path) == 0
    assert json.loads((tmp_path / "results" / "run.json").read_text())["heads_trained_this_run"] == 1
    second = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    pd.testing.assert_frame_equal(first[["task", "auc", "sensitivity"]], second[["task", "auc", "sensitivity"]])
    assert [p.name for p in checkpoint.parent.iterdir() if p.suffix == ".keras"] == ["best.keras"]
