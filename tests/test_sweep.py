"""Sweeps: grid config, joint head training, validation-only selection, resumption."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_small_benchmark

import run_benchmark
from benchmark.config import RunConfig, load_toml
from benchmark.evaluation.verify import verify
from benchmark.records import PointRecord
from benchmark.settings import GridKey, HeadSettings
from benchmark.training.heads import train_heads

GRID = ("--backbones", "MobileNetV2", "--image-size", "32", "--lr", "1e-3", "1e-2", "--dropout", "0.0", "0.3",
        "--l2", "0", "--no-probe")  # fmt: skip


# Heads trained in this process and Keras pinned, as in conftest's SMALL (test_worker_processes_... asks for 2 workers).
SWEEP = {"preset": ("--epochs", "6", "--patience", "3", "--head-workers", "1", "--runtime", "keras"), "grid": GRID}


def _blobs(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centers = np.random.default_rng(7).normal(0, 1, (3, 8))
    return (centers[labels] + rng.normal(0, 1.0, (n, 8))).astype(np.float32), labels


@pytest.mark.slow
def test_heads_trained_together_equal_heads_trained_alone(tmp_path: Path):
    x, y = _blobs(0)
    xv, yv = _blobs(1)
    grid = [
        HeadSettings(lr=1e-3, dropout=0.0, epochs=5, patience=2, seed=4),
        HeadSettings(lr=1e-2, dropout=0.5, epochs=5, patience=2, seed=4),
        HeadSettings(lr=3e-3, dropout=0.2, epochs=5, patience=2, seed=4),
    ]
    together = train_heads(x, y, xv, yv, 3, grid, [tmp_path / f"t{i}" for i in range(3)], progress=False)
    for i, settings in enumerate(grid):
        alone = train_heads(x, y, xv, yv, 3, [settings], [tmp_path / f"a{i}"], progress=False)[0]
        assert alone.history["val_loss"] == pytest.approx(together[i].history["val_loss"], rel=1e-5, abs=1e-6)
        for joint_weight, lone_weight in zip(together[i].model.get_weights(), alone.model.get_weights(), strict=True):
            np.testing.assert_allclose(joint_weight, lone_weight, rtol=1e-5, atol=1e-6)
    step = [HeadSettings(lr=lr, dropout=0.2, lr_schedule="step", step_decay_epochs=2, epochs=5, seed=4)
            for lr in (3e-3, 1e-2)]  # fmt: skip
    step_together = train_heads(x, y, xv, yv, 3, step, [tmp_path / "s0", tmp_path / "s1"], progress=False)
    step_alone = train_heads(x, y, xv, yv, 3, step[:1], [tmp_path / "s2"], progress=False)[0]
    assert step_alone.history["val_loss"] == pytest.approx(step_together[0].history["val_loss"], rel=1e-5)
    constant_alone = train_heads(x, y, xv, yv, 3, [grid[2]], [tmp_path / "c"], progress=False)[0]
    assert step_alone.history["val_loss"][-1] != pytest.approx(constant_alone.history["val_loss"][-1])
    # Different settings really give different heads.
    assert together[0].history["val_loss"] != pytest.approx(together[1].history["val_loss"])


def test_grid_and_toml_config(tmp_path: Path):
    config = RunConfig(
        lr=(1e-4, 1e-3), dropout=(0.1, 0.3, 0.5), l2=(0.0, 0.1), lr_schedule=("constant", "step"), seeds=2
    )
    grid = config.head_grid()
    assert len(grid) == 2 * 3 * 2 * 2 * 2
    assert {(h.lr, h.dropout, h.l2, h.lr_schedule, h.seed) for h in grid} == {
        (lr, d, l2, s, seed)
        for lr in (1e-4, 1e-3)
        for d in (0.1, 0.3, 0.5)
        for l2 in (0.0, 0.1)
        for s in ("constant", "step")
        for seed in (0, 1)
    }
    assert {h.kind for h in grid} == {"keras"}
    # The probe: one deterministic fit per penalty, whatever the seeds; none when switched off.
    probes = RunConfig(probe_l2=(0.01, 1.0), seeds=3).probe_grid()
    assert [(p.kind, p.l2, p.seed) for p in probes] == [("logreg", 0.01, 0), ("logreg", 1.0, 0)]
    assert RunConfig(probe=False).probe_grid() == []
    good = tmp_path / "good.toml"
    good.write_text('backbones = ["ResNet50"]\nlr = [1e-4, 5e-4]\ndropout = 0.3\nimage_size = [224, 299]\n')
    loaded = RunConfig(**load_toml(good))
    loaded.validate()
    assert loaded.lr == (1e-4, 5e-4) and loaded.dropout == (0.3,) and loaded.image_size == (224, 299)
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = [1e-3]\n")
    with pytest.raises(ValueError, match="unknown key.*learning_rate.*valid keys.*lr"):
        load_toml(bad)
    for wrong in (dict(lr=(-1e-3,)), dict(dropout=(1.0,)), dict(lr_schedule=("cosine",)), dict(select_by="auc"),
                  dict(l2=(-0.1,)), dict(probe_l2=(0.0,))):  # fmt: skip
        with pytest.raises(ValueError):
            RunConfig(**wrong).validate()


def test_cli_and_toml_errors_come_before_any_work(kermany_root: Path, tmp_path: Path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("dropuot = 0.2\n")
    assert run_benchmark.main(["--config", str(bad), "--data", str(kermany_root)]) == 2
    assert "dropout" in capsys.readouterr().err
    assert run_small_benchmark(kermany_root, tmp_path, "--select-by", "covid_vs_rest.auc", results="r", **SWEEP) == 2
    assert "normal_vs_pneumonia" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_selection_ignores_the_test_labels(kermany_root: Path, tmp_path: Path):
    assert run_small_benchmark(kermany_root, tmp_path, results="original", **SWEEP) == 0
    # Swap the test images between classes: test labels change, train and val do not.
    test_dir = kermany_root / "test"
    normal = sorted((test_dir / "NORMAL").iterdir())
    viral = sorted(p for p in (test_dir / "PNEUMONIA").iterdir() if "virus" in p.name)
    for i, (a, b) in enumerate(zip(normal, viral, strict=False)):
        a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
        a.write_bytes(b_bytes)
        b.write_bytes(a_bytes)
        if i == 3:
            break
    assert run_small_benchmark(kermany_root, tmp_path, results="shuffled", **SWEEP) == 0
    original = pd.read_csv(tmp_path / "original" / "grid.csv")
    shuffled = pd.read_csv(tmp_path / "shuffled" / "grid.csv")
    pd.testing.assert_frame_equal(original, shuffled)  # every validation score is the same
    keys = ["backbone", "image_size", "lr", "dropout", "lr_schedule"]
    chosen = [pd.read_csv(tmp_path / n / "leaderboard.csv")[keys].drop_duplicates() for n in ("original", "shuffled")]
    pd.testing.assert_frame_equal(chosen[0].reset_index(drop=True), chosen[1].reset_index(drop=True))
    # The operating threshold is chosen on validation too: the test labels cannot move it.
    thresholds = [pd.read_csv(tmp_path / n / "leaderboard.csv")["op_threshold"] for n in ("original", "shuffled")]
    pd.testing.assert_series_equal(thresholds[0], thresholds[1])
    test_scores = [pd.read_csv(tmp_path / n / "leaderboard.csv")["auc"] for n in ("original", "shuffled")]
    assert not np.allclose(test_scores[0], test_scores[1])  # the test labels did change
    assert verify(tmp_path / "shuffled") == []


@pytest.mark.slow
def test_rerun_skips_finished_points_and_ends_identical(kermany_root: Path, tmp_path: Path, capsys):
    assert run_small_benchmark(kermany_root, tmp_path, "--seeds", "2", results="full", **SWEEP) == 0
    capsys.readouterr()
    # Simulate a sweep killed after some points: copy half the finished points to a fresh results dir.
    finished = sorted((tmp_path / "full" / "heads").iterdir())
    for folder in finished[: len(finished) // 2]:
        shutil.copytree(folder, tmp_path / "resumed" / "heads" / folder.name)
    assert run_small_benchmark(kermany_root, tmp_path, "--seeds", "2", results="resumed", **SWEEP) == 0
    out = capsys.readouterr().out
    assert "already done" in out and "trained" in out
    run_info = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert run_info["heads_trained_this_run"] == len(finished) - len(finished) // 2
    full = pd.read_csv(tmp_path / "full" / "leaderboard.csv")
    resumed = pd.read_csv(tmp_path / "resumed" / "leaderboard.csv")
    metrics = ["backbone", "lr", "dropout", "seed", "task", "sensitivity", "specificity", "f1", "auc"]
    pd.testing.assert_frame_equal(full[metrics], resumed[metrics])
    assert set(full["seed"]) == {0, 1}
    markdown = (tmp_path / "resumed" / "leaderboard.md").read_text()
    assert "±" in markdown and "Every grid point" in markdown and "plots/metric_bars.png" in markdown
    for plot in ("training_curves.png", "metric_bars.png", "roc_normal_vs_pneumonia.png"):
        assert (tmp_path / "resumed" / "plots" / plot).stat().st_size > 1000


@pytest.mark.slow
def test_a_failing_point_is_recorded_and_the_sweep_goes_on(kermany_root: Path, tmp_path: Path, monkeypatch):
    from benchmark.training import sweep

    real = sweep.train_heads

    def flaky(*args, **kwargs):
        if any(s.lr == 1e-2 and s.dropout == 0.3 for s in args[5]):
            raise FloatingPointError("simulated divergence")
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "train_heads", flaky)
    assert run_small_benchmark(kermany_root, tmp_path, results="r", **SWEEP) == 0
    grid = pd.read_csv(tmp_path / "r" / "grid.csv")
    failed = grid[grid["failed"] > 0]
    assert len(failed) == 1 and "simulated divergence" in failed["errors"].iloc[0]
    assert (grid["seeds"] > 0).sum() == 3
    assert "failed" in (tmp_path / "r" / "leaderboard.md").read_text()


def _point(status: str = "done", **scores) -> PointRecord:
    settings = HeadSettings(lr=1e-2, dropout=0.3)
    return PointRecord("p-1", GridKey.for_head("MobileNetV2", 32, settings), 0, "none", settings, status, **scores)


def test_selection_score_orientation():
    point = _point(val_loss=0.4, val={"normal_vs_pneumonia": {"auc": 0.9}})
    assert point.selection_score("val_loss") == -0.4
    assert point.selection_score("normal_vs_pneumonia.auc") == 0.9
    assert point.selection_score("macro_auc") == -math.inf  # not multi-label: never chosen by it


def test_a_point_record_keeps_the_layout_of_point_json():
    done = _point(best_epoch=3, epochs_run=5, seconds=1.5, val_loss=0.4, val_multiclass_accuracy=0.8,
                  val={"normal_vs_pneumonia": {"auc": 0.9}})  # fmt: skip
    values = done.to_json()
    assert list(values) == ["point_id", "backbone", "image_size", "kind", "lr", "dropout", "l2", "lr_schedule",
                            "seed", "weights", "settings", "status", "error", "best_epoch", "epochs_run", "seconds",
                            "val_loss", "val_multiclass_accuracy", "val"]  # fmt: skip
    assert (values["lr"], values["dropout"], values["settings"]["lr"]) == (1e-2, 0.3, 1e-2)
    assert PointRecord.from_json(json.loads(json.dumps(values))) == done
    failed = _point("failed", error="MemoryError: x")
    assert list(failed.to_json())[-2:] == ["status", "error"]  # no scores
    assert PointRecord.from_json(failed.to_json()) == failed and not failed.done
    with pytest.raises(KeyError):
        PointRecord.from_json({"status": "done"})


@pytest.mark.slow
def test_worker_processes_give_the_in_process_results(kermany_root: Path, tmp_path: Path, capsys):
    # Two seeds make two groups of heads, so two workers really run in parallel.
    seeds = ("--seeds", "2")
    assert run_small_benchmark(kermany_root, tmp_path, *seeds, "--head-workers", "1", results="inline", **SWEEP) == 0
    assert "worker processes" not in capsys.readouterr().out
    assert run_small_benchmark(kermany_root, tmp_path, *seeds, "--head-workers", "2", results="workers", **SWEEP) == 0
    assert "in 2 single-threaded worker processes" in capsys.readouterr().out
    keys = ["backbone", "image_size", "kind", "lr", "dropout", "l2", "lr_schedule"]
    inline, workers = (
        pd.read_csv(tmp_path / name / "grid.csv").sort_values(keys).reset_index(drop=True)
        for name in ("inline", "workers")
    )
    assert len(inline) == 4 and set(inline["seeds"]) == {2}
    # One thread or two only reorders float sums: the same points, the same scores to float32 noise.
    pd.testing.assert_frame_equal(inline, workers, rtol=1e-4)
