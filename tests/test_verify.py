"""``cxr-bench verify`` checks the verdict independently: DeLong, McNemar and Holm recomputed from predictions.csv,
the tied heads that follow, the ensemble's mean, the rows report.json lists, and the cross-validation's summary.

The run is the session's ``probe_run`` (a head, its probe and their ensemble: three heads, three pairs per task);
each test that changes an output works on a copy of its few files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from benchmark.evaluation.comparisons import delong_test, paired_proportions
from benchmark.evaluation.verify import delong_1988, exact_mcnemar, holm, main, verify

OUTPUTS = ("leaderboard.csv", "predictions.csv", "comparisons.csv", "report.json")


def copy_outputs(run, out: Path) -> Path:
    """The run's checked files (not its heads or cache) copied into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        shutil.copy(run.results / name, out / name)
    return out


def edit_report(results: Path, change) -> None:
    """Apply ``change`` to report.json's ``data`` in place."""
    path = results / "report.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    change(report["data"])
    path.write_text(json.dumps(report), encoding="utf-8")


def edit_csv(results: Path, name: str, change) -> None:
    """Replace ``name`` with ``change`` of its table."""
    frame = pd.read_csv(results / name)
    change(frame).to_csv(results / name, index=False)


def test_a_fresh_run_passes_with_every_pair_checked(probe_run, capsys):
    report = json.loads((probe_run.results / "report.json").read_text(encoding="utf-8"))["data"]
    assert len(report["ensemble"]["members"]) >= 2 and len(report["comparisons"]) == 9  # 3 heads, 3 tasks
    assert main([str(probe_run.results)]) == 0
    out = capsys.readouterr().out
    assert "all 9 leaderboard rows match" in out and "verdict, comparisons" in out


def _alter_p_in_csv(results: Path) -> None:
    edit_csv(results, "comparisons.csv", lambda frame: frame.assign(p=frame["p"].where(frame.index != 0, 0.5)))


def _alter_p_everywhere(results: Path) -> None:
    _alter_p_in_csv(results)
    edit_report(results, lambda data: data["comparisons"][0].update(p=0.5))


def _toggle_tied(results: Path) -> None:
    def change(data):
        verdict = data["verdict"]["normal_vs_pneumonia"]
        other = next(name for name in verdict["heads"] if name != verdict["best"])
        tied = verdict["tied"]
        tied.remove(other) if other in tied else tied.append(other)

    edit_report(results, change)


def _alter_ensemble(results: Path) -> None:
    def change(frame):
        rows = frame.index[frame["backbone"] == "ensemble"][:3]
        # Moved between two classes, so every row still sums to one.
        frame.loc[rows, "p_normal"] += 0.01
        frame.loc[rows, "p_bacterial"] -= 0.01
        return frame

    edit_csv(results, "predictions.csv", change)


def _delete_leaderboard_row(results: Path) -> None:
    edit_csv(results, "leaderboard.csv", lambda frame: frame.drop(index=4))


def _delete_prediction_row(results: Path) -> None:
    edit_csv(results, "predictions.csv", lambda frame: frame.drop(index=0))


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (_alter_p_in_csv, "comparisons.csv line 2 (internal normal_vs_pneumonia"),
        (_alter_p_everywhere, " p: recorded 0.5, recomputed"),
        (_toggle_tied, "verdict internal normal_vs_pneumonia: tied"),
        (_alter_ensemble, "ensemble: its test probabilities differ from the mean"),
        (_delete_leaderboard_row, "leaderboard.csv lacks the internal row of"),
        (_delete_prediction_row, "are not the images of"),
    ],
    ids=["p-in-csv", "p-in-both", "tied", "ensemble", "leaderboard-row", "prediction-row"],
)  # fmt: skip
def test_a_changed_output_fails_naming_the_problem(probe_run, tmp_path: Path, capsys, tamper, named):
    results = copy_outputs(probe_run, tmp_path / "results")
    tamper(results)
    assert main([str(results)]) == 1
    out = capsys.readouterr().out
    assert named in out, out


@pytest.mark.parametrize("seed", range(6))
def test_the_independent_delong_agrees_with_the_harness_on_ties(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 80))
    truth = rng.random(n) < 0.4
    truth[:2], truth[2:4] = True, False  # two of each class at least
    # Scores on a coarse grid, so many tie within and across classes; b correlated with a.
    score_a = rng.integers(0, 6, n) + truth * rng.integers(0, 3, n)
    score_b = np.where(rng.random(n) < 0.5, score_a, rng.integers(0, 8, n))
    mine, theirs = delong_1988(truth, score_a, score_b), delong_test(truth, score_a, score_b)
    for column, value in (("auc_a", theirs.auc_a), ("auc_b", theirs.auc_b), ("delta_auc", theirs.difference),
                          ("delta_auc_low", theirs.low), ("delta_auc_high", theirs.high), ("z", theirs.z),
                          ("p", theirs.p)):  # fmt: skip
        assert mine[column] == pytest.approx(value, rel=1e-9, abs=1e-12), column
    correct_a, correct_b = score_a >= 3, score_b >= 3
    harness = paired_proportions(truth, correct_a == truth, correct_b == truth)
    assert exact_mcnemar(harness.b, harness.c) == pytest.approx(harness.p, rel=1e-12)


def test_identical_scores_differ_by_nothing():
    truth = np.array([True, True, False, False, True, False])
    score = np.array([0.9, 0.4, 0.4, 0.1, 0.7, 0.8])
    result = delong_1988(truth, score, score.copy())
    assert (result["delta_auc"], result["z"], result["p"]) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize("seed", range(4))
def test_holm_is_statsmodels_holm_with_nan_left_out(seed: int):
    rng = np.random.default_rng(seed)
    p_values = np.round(rng.random(int(rng.integers(1, 12))) ** 3, 2)  # rounded: ties, some above 1 once adjusted
    p_values[rng.random(len(p_values)) < 0.2] = np.nan
    finite = ~np.isnan(p_values)
    expected = np.full(len(p_values), np.nan)
    if finite.any():
        expected[finite] = multipletests(p_values[finite], method="holm")[1]
    np.testing.assert_allclose(holm(p_values), expected, rtol=1e-12, atol=0)


def _truncate(results: Path) -> None:
    path = results / "predictions.csv"
    text = path.read_bytes()
    path.write_bytes(text[: len(text) // 2])


def _text_probability(results: Path) -> None:
    def change(frame):
        frame["p_viral"] = frame["p_viral"].astype(object)
        frame.loc[3, "p_viral"] = "0.1x"
        return frame

    edit_csv(results, "predictions.csv", change)


@pytest.mark.parametrize(
    ("mistake", "said"),
    [
        (lambda results: shutil.rmtree(results), "no results folder"),
        (_truncate, "predictions.csv ends in the middle of a line"),
        (_text_probability, "predictions.csv line 5: p_viral is '0.1x', not a number"),
        (lambda results: (results / "leaderboard.csv").unlink(), "has no leaderboard.csv"),
    ],
    ids=["missing-folder", "truncated", "non-numeric", "no-leaderboard"],
)  # fmt: skip
def test_a_folder_that_cannot_be_read_is_one_line_not_a_traceback(probe_run, tmp_path: Path, capsys, mistake, said):
    results = copy_outputs(probe_run, tmp_path / "results")
    mistake(results)
    assert main([str(results)]) == 2
    captured = capsys.readouterr()
    assert said in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out


def test_a_run_without_report_json_is_checked_as_far_as_it_can(probe_run, tmp_path: Path, capsys):
    results = copy_outputs(probe_run, tmp_path / "results")
    (results / "report.json").unlink()
    assert main([str(results)]) == 0
    assert "no report.json (a run from before the verdict was reported)" in capsys.readouterr().out
    edit_csv(results, "leaderboard.csv", lambda frame: frame.assign(auc=frame["auc"] + 0.01))
    assert any("auc" in problem for problem in verify(results))


def _cross_validation(results: Path, folds: int = 3, repeats: int = 2) -> None:
    """cv_folds.csv and cv_summary.csv as the harness writes them, from random per-fold rows of three models."""
    from benchmark.evaluation.crossval_stats import summarize
    from benchmark.records import CROSSVAL_COLUMNS, CrossValResult

    rng = np.random.default_rng(0)
    rows = [{**dict.fromkeys(CROSSVAL_COLUMNS, 0), "repeat": r, "fold": f, "backbone": name, "task": task,
             "auc": float(np.round(rng.random(), 2)), "test_auc": float(rng.random())}
            for r in range(repeats) for f in range(folds) for task in ("normal_vs_pneumonia", "viral_vs_rest")
            for name in ("A", "B", "C")]  # fmt: skip
    rows[0]["auc"] = float("nan")  # a fold a model could not be scored on
    result = CrossValResult(folds, repeats, rows)
    pd.DataFrame(rows, columns=list(CROSSVAL_COLUMNS)).to_csv(results / "cv_folds.csv", index=False)
    summarize(result).table.to_csv(results / "cv_summary.csv", index=False)
    edit_csv(results, "leaderboard.csv", lambda frame: frame.assign(config_cv=folds))
    edit_report(results, lambda data: [row.update(config_cv=folds) for row in data["leaderboard"]])


def test_the_cross_validation_summary_is_recomputed_from_the_folds(probe_run, tmp_path: Path):
    results = copy_outputs(probe_run, tmp_path / "results")
    _cross_validation(results)
    assert verify(results) == []
    columns = ("mean", "sd", "mean_rank", "ci_high")

    def change(frame):
        for row, column in enumerate(columns):  # each on another row, so each is named
            frame.loc[row, column] += 1e-6
        return frame

    edit_csv(results, "cv_summary.csv", change)
    problems = verify(results)
    for column in columns:
        assert any(f" {column}: " in problem for problem in problems), column
