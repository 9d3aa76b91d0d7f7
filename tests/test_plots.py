"""The leaderboard's PNG plots: ROC points against scikit-learn, valid files, no leaked figures."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve

from benchmark.reporting import plots
from common import files

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BACKBONES = ("VGG16", "Xception", "InceptionV3", "InceptionResNetV2", "ResNet50", "MobileNetV2")
TASKS = ("normal_vs_pneumonia", "bacterial_vs_rest", "viral_vs_rest")


@pytest.fixture(autouse=True)
def no_figure_left_open():
    """Every test here, each of whose plots is really rendered, must leave pyplot's figure list as it was."""
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def assert_png(path: Path, min_side: int = 200) -> None:
    """A real PNG of reasonable size, and no temp file left beside it."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_side
    assert sorted(p.name for p in path.parent.iterdir() if p.name != path.name and p.suffix != ".png") == []


def history(n: int, rng: np.random.Generator, accuracy: bool = True) -> dict[str, list[float]]:
    epochs = np.arange(1, n + 1)
    loss = np.exp(-epochs / 5) + 0.3 + rng.normal(0, 0.01, n)
    val = np.exp(-epochs / 5) + 0.4 + 0.002 * epochs**2 / n + rng.normal(0, 0.02, n)
    out = {"loss": loss.tolist(), "val_loss": val.tolist()}
    if accuracy:
        out |= {"accuracy": (1 - loss / 2).tolist(), "val_accuracy": (1 - val / 2).tolist()}
    return out


def metric_rows(rng: np.random.Generator, tasks: tuple[str, ...] = TASKS[:2]) -> list[dict]:
    rows = []
    for task in tasks:
        for backbone in BACKBONES[:3]:
            row = {"task": task, "backbone": backbone, "positive": "bacterial+viral"}
            for metric in ("sensitivity", "specificity", "f1", "auc"):
                row[metric] = float(rng.uniform(0.5, 1.0))
                row[f"{metric}_sd"] = float(rng.uniform(0.0, 0.08))
            rows.append(row)
    return rows


# --- roc_points -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_roc_points_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.random(200) < 0.4
    # Rounding to one decimal makes many ties, within and across the classes.
    score = np.round(rng.random(200) * 0.6 + 0.4 * y_true, 1)
    fpr, tpr = plots.roc_points(y_true, score)
    ref_fpr, ref_tpr, _ = roc_curve(y_true, score, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    assert len(fpr) == len(np.unique(score)) + 1
    assert plots.trapezoid_auc(fpr, tpr) == pytest.approx(roc_auc_score(y_true, score), abs=1e-12)


def test_roc_points_start_and_end_at_corners_and_accept_ints():
    fpr, tpr = plots.roc_points([0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.9])
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_perfect_separation_gives_the_top_left_corner():
    y_true = np.array([False, False, False, True, True])
    fpr, tpr = plots.roc_points(y_true, [0.1, 0.2, 0.3, 0.8, 0.9])
    # The positives come first: up the left edge, then along the top.
    np.testing.assert_array_equal(fpr, [0.0, 0.0, 0.0, 1 / 3, 2 / 3, 1.0])
    np.testing.assert_array_equal(tpr, [0.0, 0.5, 1.0, 1.0, 1.0, 1.0])
    assert plots.trapezoid_auc(fpr, tpr) == 1.0


def test_all_scores_tied_is_the_diagonal():
    fpr, tpr = plots.roc_points([True, False, True, False], [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(fpr, [0.0, 1.0])
    np.testing.assert_array_equal(tpr, [0.0, 1.0])
    assert plots.trapezoid_auc(fpr, tpr) == 0.5


@pytest.mark.parametrize(
    ("y_true", "score"),
    [([True, True], [0.1, 0.2]), ([False, False], [0.1, 0.2]), ([True, False], [0.1, math.nan]), ([True], [0.1, 0.2])],
)
def test_roc_points_rejects_undefined_input(y_true, score):
    with pytest.raises(ValueError):
        plots.roc_points(y_true, score)


# --- the plots ----------------------------------------------------------------------------------------


def test_training_curves_png(tmp_path):
    rng = np.random.default_rng(0)
    histories = {name: history(int(rng.integers(5, 25)), rng) for name in BACKBONES}
    best = {name: len(h["val_loss"]) - 2 for name, h in histories.items()}
    best["VGG16"] = 999  # out of range: not drawn, not a crash
    two = plots.plot_training_curves(histories, tmp_path / "sub" / "curves.png", best_epochs=best)
    assert two == tmp_path / "sub" / "curves.png"
    assert_png(two)
    # Without accuracy there is only the loss panel.
    one = plots.plot_training_curves({"a": history(8, rng, accuracy=False)}, tmp_path / "sub" / "one.png")
    assert_png(one)
    with Image.open(two) as wide, Image.open(one) as narrow:
        assert wide.width > wide.height
        assert narrow.width < wide.width


def test_forty_heads_render(tmp_path):
    rng = np.random.default_rng(2)
    histories = {f"head_{i:02d}_lr1e-3_dropout0.5": history(int(rng.integers(3, 30)), rng) for i in range(40)}
    out = plots.plot_training_curves(histories, tmp_path / "many.png", best_epochs={k: 2 for k in histories})
    assert_png(out)
    with Image.open(out) as image:
        # The legend is replaced by a note, so 40 names do not stretch the image.
        assert image.width < 2000 and image.height < 1000


def test_empty_histories_rejected(tmp_path):
    with pytest.raises(ValueError):
        plots.plot_training_curves({}, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_metric_bars_png_from_dicts_and_dataframe(tmp_path):
    rows = metric_rows(np.random.default_rng(3), tasks=TASKS)
    a = plots.plot_metric_bars(rows, tmp_path / "dicts.png")
    b = plots.plot_metric_bars(pd.DataFrame(rows), tmp_path / "frame.png")
    assert_png(a)
    assert_png(b)
    assert a.read_bytes() == b.read_bytes()
    with Image.open(a) as image:
        assert image.height > image.width * 0.6  # one panel per task, stacked


def test_metric_bars_nan_error_bars_and_duplicates(tmp_path):
    rows = metric_rows(np.random.default_rng(4))
    rows[0]["f1"] = math.nan
    rows[1]["auc"] = None
    rows[2] |= {"sensitivity": math.nan, "specificity": math.nan, "f1": math.nan, "auc": math.nan}
    rows[3]["sensitivity_sd"] = math.nan
    rows[4]["auc_sd"] = 0.5  # whisker clipped to [0, 1]
    rows.append(dict(rows[5]))  # the same backbone twice in one task
    rows.append({"task": "extra_task", "backbone": "VGG16", "sensitivity": 1.0, "specificity": 0.0, "f1": 0.5})
    rows[-1] |= {"auc": math.nan, **{f"{m}_sd": 0.0 for m in ("sensitivity", "specificity", "f1", "auc")}}
    errors = {m: f"{m}_sd" for m in ("sensitivity", "specificity", "f1", "auc")}
    out = plots.plot_metric_bars(
        rows, tmp_path / "bars.png", error_columns=errors, value_labels=True, metrics=("sensitivity", "f1", "auc")
    )
    assert_png(out)


def test_metric_bars_missing_column_named(tmp_path):
    with pytest.raises(ValueError, match="auc"):
        plots.plot_metric_bars([{"task": "t", "backbone": "b", "sensitivity": 1, "specificity": 1, "f1": 1}], tmp_path)
    with pytest.raises(ValueError, match="sd_col"):
        plots.plot_metric_bars(metric_rows(np.random.default_rng(0)), tmp_path, error_columns={"f1": "sd_col"})


def test_roc_curves_png_with_single_class_skipped(tmp_path):
    rng = np.random.default_rng(5)
    y = rng.random(150) < 0.6
    curves = {name: (y, y * 0.3 * i + rng.random(150)) for i, name in enumerate(BACKBONES)}
    curves["only_positive"] = (np.ones(20, dtype=bool), rng.random(20))
    curves["only_negative"] = (np.zeros(20, dtype=bool), rng.random(20))
    curves["diverged"] = (y, np.full(150, np.nan))
    out = plots.plot_roc_curves(curves, tmp_path / "roc.png", title="normal_vs_pneumonia")
    assert_png(out, min_side=400)


def test_roc_curves_all_skipped_still_renders(tmp_path):
    out = plots.plot_roc_curves({"a": (np.ones(5, dtype=bool), np.arange(5.0))}, tmp_path / "roc.png", title="t")
    assert_png(out)


def test_confusion_matrix_png(tmp_path):
    matrix = np.array([[180, 40, 14], [12, 215, 15], [20, 55, 73]])
    out = plots.plot_confusion_matrix(matrix, ["normal", "bacterial", "viral"], tmp_path / "cm.png", title="ResNet50")
    assert_png(out, min_side=400)
    # A class with no test image, and averaged (non-integer) counts.
    empty_row = np.array([[3.5, 1.0], [0.0, 0.0]])
    assert_png(plots.plot_confusion_matrix(empty_row, ["normal", "pneumonia"], tmp_path / "cm2.png", title="t"))


def test_confusion_matrix_shape_checked(tmp_path):
    with pytest.raises(ValueError):
        plots.plot_confusion_matrix(np.ones((3, 3)), ["a", "b"], tmp_path / "cm.png", title="t")
    with pytest.raises(ValueError):
        plots.plot_confusion_matrix(np.ones((2, 3)), ["a", "b"], tmp_path / "cm.png", title="t")


def test_overwrites_existing_file(tmp_path):
    target = tmp_path / "cm.png"
    target.write_bytes(b"old")
    plots.plot_confusion_matrix(np.eye(2), ["a", "b"], target, title="t")
    assert_png(target)


def test_failed_save_leaves_no_temp_file_and_closes_figure(tmp_path, monkeypatch):
    before = len(plt.get_fignums())

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)  # the one atomic-write helper plots save through
    with pytest.raises(OSError, match="disk full"):
        plots.plot_confusion_matrix(np.eye(2), ["a", "b"], tmp_path / "cm.png", title="t")
    assert list(tmp_path.iterdir()) == []
    assert len(plt.get_fignums()) == before


@pytest.mark.slow  # draws every kind of figure twice
def test_repeated_calls_leak_no_figures(tmp_path, monkeypatch):
    """30 calls, rendering stubbed out (it is what takes the time; the other tests render for real)."""
    monkeypatch.setattr(Figure, "savefig", lambda self, handle, **kwargs: handle.write(PNG_SIGNATURE))
    rng = np.random.default_rng(6)
    histories = {"a": history(5, rng), "b": history(7, rng)}
    rows = metric_rows(rng)[:4]
    y = np.array([True, False, True, False, True])
    calls = [
        lambda: plots.plot_training_curves(histories, tmp_path / "curves.png", best_epochs={"a": 2}),
        lambda: plots.plot_metric_bars(rows, tmp_path / "bars.png"),
        lambda: plots.plot_roc_curves({"m": (y, rng.random(5))}, tmp_path / "roc.png", title="t"),
        lambda: plots.plot_confusion_matrix(np.eye(3), ["a", "b", "c"], tmp_path / "cm.png", title="t"),
    ]
    before = len(plt.get_fignums())
    for i in range(30):
        calls[i % len(calls)]()
    assert len(plt.get_fignums()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.png", "cm.png", "curves.png", "roc.png"]


def test_error_while_drawing_closes_the_figure(tmp_path):
    before = len(plt.get_fignums())
    with pytest.raises((TypeError, ValueError)):
        plots.plot_training_curves({"a": {"loss": ["not", "a", "number"], "val_loss": [1, 2, 3]}}, tmp_path / "x.png")
    assert len(plt.get_fignums()) == before
    assert list(tmp_path.iterdir()) == []


def test_reliability_png_one_line_per_model(tmp_path):
    rng = np.random.default_rng(0)
    score = rng.random(300)
    curves = {"calibrated": (rng.random(300) < score, score), "overconfident": (rng.random(300) < 0.5, score)}
    path = plots.plot_reliability(curves, tmp_path / "reliability.png", title="Reliability")
    assert path.stat().st_size > 1000
    assert plt.get_fignums() == []


def test_a_figure_laid_out_once_saves_the_same_pixels_as_savefigs_own_layout(tmp_path: Path):
    def figure():
        fig, ax = plt.subplots(figsize=(7.2, 6.4), layout="constrained")
        for n in range(3):
            ax.plot(np.linspace(0, 1, 20) ** (n + 1), label=f"a long model name {n}")
        ax.set_xlabel("1 - specificity")
        fig.legend(loc="outside right upper")
        return fig

    plots._save(figure(), tmp_path / "once.png")
    reference = figure()
    reference.savefig(tmp_path / "twice.png", format="png", dpi=plots.DPI, facecolor="white")
    plt.close(reference)
    once, twice = (np.asarray(Image.open(tmp_path / name)) for name in ("once.png", "twice.png"))
    assert once.shape == twice.shape and np.array_equal(once, twice)
