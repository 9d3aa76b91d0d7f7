"""Repeated, patient-grouped cross-validation of the heads (``--cv K --cv-repeats R``): its folds, its statistics,
and a small run end to end that writes its tables and diagrams and resumes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DRAWN, HEAD_AND_PROBE, make_kermany, run_small_benchmark, write_image
from scipy import stats

from benchmark.config import RunConfig
from benchmark.evaluation.crossval_stats import (
    corrected_interval,
    critical_difference,
    friedman,
    nemenyi,
    summarize,
    wilcoxon_holm,
)
from benchmark.records import CROSSVAL_COLUMNS, CrossValResult
from benchmark.reporting.crossval_report import crossval_sections
from benchmark.reporting.document import Report, render_markdown
from benchmark.settings import CrossValSettings
from benchmark.training.crossval import SET_ASIDE, check_folds, fold_datasets
from features.data.dataset import make_splits, patient_of, scan_dataset

MODELS = ("A", "B", "C", "D-logreg")


def _kermany_with_patients(root: Path) -> Path:
    """Kermany file names that carry the patient: per class 8 train, 1 val and 3 test patients, 2 images each."""
    rng = np.random.default_rng(0)
    start = {"train": 0, "val": 100, "test": 200}
    for split, patients in {"train": 8, "val": 1, "test": 3}.items():
        for k in range(start[split], start[split] + patients):
            for j in (1, 2):
                write_image(root / split / "NORMAL" / f"IM-{k:04d}-{j:04d}.jpeg", "normal", rng)
                write_image(root / split / "PNEUMONIA" / f"person{k}_bacteria_{j}.jpeg", "bacterial", rng)
                write_image(root / split / "PNEUMONIA" / f"person{k + 1000}_virus_{j}.jpeg", "viral", rng)
    return root


def _kermany_splits(root: Path):
    """``_kermany_with_patients``, split as a run splits it."""
    return make_splits(scan_dataset(_kermany_with_patients(root)), seed=0)


def test_folds_keep_each_patient_on_one_side_and_never_touch_the_test_split(tmp_path: Path):
    dataset = _kermany_splits(tmp_path / "data")
    test_paths = {record.path for record in dataset.split("test")}
    pool = {record.path for record in dataset.records if record.split in ("train", "val")}
    folds = list(fold_datasets(CrossValSettings(folds=3, repeats=2, seed=0, val_fraction=0.2), dataset))
    assert [(repeat, fold) for repeat, fold, _ in folds] == [(r, f) for r in (1, 2) for f in (1, 2, 3)]
    held_out_per_repeat: dict[int, list[str]] = {1: [], 2: []}
    for repeat, _, fold in folds:
        assert [r.path for r in fold.records] == [r.path for r in dataset.records]  # rows stay aligned
        sides = {name: {r.path for r in fold.split(name)} for name in ("train", "val", "test")}
        assert {r.path for r in fold.split(SET_ASIDE)} == test_paths
        assert not test_paths & (sides["train"] | sides["val"] | sides["test"])
        patients = {name: {patient_of(path) for path in paths} for name, paths in sides.items()}
        assert len(patients["train"]) < len(sides["train"])  # the names do carry patients
        assert not patients["test"] & (patients["train"] | patients["val"])
        assert not patients["val"] & patients["train"]
        assert all(fold.labels("test").tolist().count(c) for c in range(3))  # stratified: every class held out
        held_out_per_repeat[repeat] += sorted(sides["test"])
    for held_out in held_out_per_repeat.values():  # a repeat's held-out folds cover the pool once
        assert sorted(held_out) == sorted(pool)
    assert held_out_per_repeat[1] != held_out_per_repeat[2]  # another seed, other folds


def test_more_folds_than_patients_of_a_class_is_refused_in_one_line(tmp_path: Path, capsys):
    dataset = _kermany_splits(tmp_path / "data")
    # 9 patients of each class (18 images) in train + validation.
    check_folds(CrossValSettings(folds=9), dataset)
    with pytest.raises(ValueError, match="--cv 10 needs at least 10 patients of every class.*has 9"):
        check_folds(CrossValSettings(folds=10), dataset)
    assert run_small_benchmark(tmp_path / "data", tmp_path, "--cv", "10") == 2
    err = capsys.readouterr().err
    assert "--cv 10 needs at least 10 patients" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results" / "cv").exists() and not (tmp_path / "results" / "leaderboard.md").exists()


@pytest.mark.parametrize(
    ("values", "message"),
    [({"cv": 1}, "--cv must be 0 (off) or at least 2"), ({"cv": 3, "cv_repeats": 0}, "--cv-repeats must be at least 1"),
     ({"cv_repeats": 2}, "--cv-repeats 2 needs --cv K")],
)  # fmt: skip
def test_bad_cross_validation_options_are_refused(values, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig(**values).validate()


def test_the_stage_settings_carry_the_cross_validation_only_when_asked():
    assert RunConfig().stages().crossval is None
    config = RunConfig(cv=5, cv_repeats=3, seed=7, val_fraction=0.25)
    assert config.stages().crossval == CrossValSettings(folds=5, repeats=3, seed=7, val_fraction=0.25)


def _table(auc, folds: int = 5, repeats: int = 2, task: str = "t") -> CrossValResult:
    """Hand-made rows: ``auc(repeat, fold, model index)`` gives each held-out AUC; test AUC is AUC + 0.01."""
    rows = [
        {"repeat": r, "fold": f, "backbone": name, "image_size": 32, "task": task, "kind": "keras", "lr": 1e-3,
         "dropout": 0.5, "l2": 0.0, "lr_schedule": "constant", "seeds": 1, "n_heldout": 20,
         "auc": auc(r, f, i), "sensitivity": 0.5, "specificity": 0.5, "accuracy": 0.5, "f1": 0.5,
         "test_auc": auc(r, f, i) + 0.01, "seconds": 1.0}
        for r in range(1, repeats + 1) for f in range(1, folds + 1) for i, name in enumerate(MODELS)
    ]  # fmt: skip
    return CrossValResult(folds, repeats, rows, seconds=12.0, trained=80)


def test_the_summary_matches_independent_computations():
    rng = np.random.default_rng(3)
    values = np.round(rng.uniform(0.6, 0.9, (2, 5, len(MODELS))), 2)
    values[0, 0, 1] = values[0, 0, 2]  # a tie: both get the average rank
    result = _table(lambda r, f, i: float(values[r - 1, f - 1, i]))
    summary = summarize(result)
    assert CrossValResult.from_json(result.to_json()) == result
    frame = pd.DataFrame(result.rows)
    n = 10
    for i, name in enumerate(MODELS):
        row = summary.table.set_index("backbone").loc[name]
        auc = values[:, :, i].ravel()
        assert row["mean"] == pytest.approx(auc.mean()) and row["sd"] == pytest.approx(pd.Series(auc).std())
        # The Nadeau-Bengio correction: the variance of the mean is sd^2 (1/n + 1/(K - 1)), not sd^2 / n.
        low, high = stats.t.interval(0.95, n - 1, loc=auc.mean(), scale=auc.std(ddof=1) * math.sqrt(1 / n + 1 / 4))
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
        naive = stats.t.interval(0.95, n - 1, loc=auc.mean(), scale=stats.sem(auc))
        assert row["ci_low"] < naive[0] and row["ci_high"] > naive[1]  # wider than the naive interval
        ranks = np.array([stats.rankdata(-values[r, f])[i] for r in range(2) for f in range(5)])
        assert row["mean_rank"] == pytest.approx(ranks.mean())
        assert row["test_auc"] == pytest.approx(auc.mean() + 0.01)
    assert sorted(summary.table["mean_rank"]) == summary.table["mean_rank"].tolist()  # best first
    expected = stats.friedmanchisquare(*(values[:, :, i].ravel() for i in range(len(MODELS))))
    comparison = summary.comparisons["t"]
    assert comparison.friedman_statistic == pytest.approx(expected.statistic)
    assert summary.table["friedman_p"].iloc[0] == pytest.approx(expected.pvalue)
    # Demšar (2006), table 5: q_0.05 for 4 classifiers is 2.569.
    assert comparison.cd == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * n)), rel=1e-3)
    assert critical_difference(3, n) == pytest.approx(2.343 * math.sqrt(3 * 4 / (6 * n)), rel=1e-3)
    mean, *spread = corrected_interval([0.8, math.nan], folds=5)  # one value: a mean, no spread
    assert mean == 0.8 and all(math.isnan(v) for v in spread)
    assert frame.groupby("backbone").size().eq(n).all()


def _matrix(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(values, columns=list(MODELS))


def test_one_model_always_winning_gives_small_p_values_and_a_tie_gives_one():
    rng = np.random.default_rng(0)
    wins = rng.uniform(0.6, 0.8, (10, len(MODELS)))
    wins[:, 0] = wins.max(axis=1) + 0.05
    _, p, _ = friedman(_matrix(wins))
    assert p < 0.01
    holm = wilcoxon_holm(_matrix(wins))
    assert (holm.loc["A", ["B", "C", "D-logreg"]] < 0.05).all()  # exact p 2/2^10, Holm-adjusted over 6 pairs
    assert (nemenyi(_matrix(wins)).loc["A"].drop("A") <= 1).all()
    ties = np.full((10, len(MODELS)), 0.75)
    statistic, p, note = friedman(_matrix(ties))
    assert (statistic, p) == (0.0, 1.0) and note
    assert (wilcoxon_holm(_matrix(ties)).to_numpy() == 1).all()
    assert nemenyi(_matrix(ties)).to_numpy() == pytest.approx(1.0)
    assert friedman(pd.DataFrame(wins[:, :2], columns=["A", "B"]))[1] is None  # needs 3 models: said, not run


def test_the_markdown_section_names_the_design_the_tests_and_the_diagram():
    sections = crossval_sections(summarize(_table(lambda r, f, i: 0.6 + 0.05 * i + 0.001 * f)))
    text = render_markdown(Report("t", [], [], sections))
    assert text.splitlines()[2] == "## Cross-validation (5 folds × 2 repeats, patient-grouped)"
    assert "| D-logreg " in text and "Friedman χ²" in text and "Nadeau-Bengio" in text
    assert "pairs told apart" in text and "Cost: 80 heads trained by this run, 12 s." in text
    assert "](plots/cd_t.png)" in text
    assert text.index("| D-logreg") < text.index("| A ")  # sorted by mean rank, best first


@pytest.mark.slow
def test_a_small_run_cross_validates_writes_its_outputs_and_resumes(tmp_path: Path, capsys, monkeypatch):
    from benchmark import pipeline

    # The leaderboard and its plots are other tests' subject; the cross-validation writes its files before them.
    monkeypatch.setattr(pipeline, "_finish", lambda *args, **kwargs: 0)
    root = make_kermany(tmp_path / "data", {"train": 12, "val": 2, "test": 6})
    args = ("--backbones", "MobileNetV2", "MobileNet-0.25", "--cv", "2", "--cv-repeats", "1")
    assert run_small_benchmark(root, tmp_path, *args, grid=HEAD_AND_PROBE, preset=DRAWN) == 0
    out = capsys.readouterr().out
    assert "cv repeat 1/1 fold 1/2: 6 heads trained" in out and "cv repeat 1/1 fold 2/2: 6 heads trained" in out
    results = tmp_path / "results"
    folds = pd.read_csv(results / "cv_folds.csv")
    assert list(folds.columns) == list(CROSSVAL_COLUMNS)
    assert len(folds) == 1 * 2 * 4 * 3  # repeats x folds x models (2 backbones, each with its probe) x tasks
    assert set(folds["backbone"]) == {"MobileNetV2", "MobileNetV2-logreg", "MobileNet-0.25", "MobileNet-0.25-logreg"}
    assert folds[["auc", "test_auc"]].notna().all().all()
    summary = pd.read_csv(results / "cv_summary.csv")
    assert len(summary) == 4 * 3 and summary["friedman_p"].between(0, 1).all()
    for task in ("normal_vs_pneumonia", "bacterial_vs_rest", "viral_vs_rest"):
        assert (results / "plots" / f"cd_{task}.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((results / "cv" / "r1-f2" / "heads").glob("*/point.json"))) == 6
    before = folds.drop(columns="seconds")
    assert run_small_benchmark(root, tmp_path, *args, grid=HEAD_AND_PROBE, preset=DRAWN) == 0
    out = capsys.readouterr().out
    assert "cv repeat 1/1 fold 2/2: 0 heads trained" in out and "cross-validation: 0 heads trained" in out
    pd.testing.assert_frame_equal(pd.read_csv(results / "cv_folds.csv").drop(columns="seconds"), before)
