"""Recompute a run's test numbers and its verdict from predictions.csv, independently of the code that made them.

    python -m benchmark.evaluation.verify results/

leaderboard.csv, per row: accuracy, sensitivity, specificity, precision, f1, auc and the four counts (argmax
decision), the operating point's test sensitivity, specificity, precision and counts, n_test,
multiclass_accuracy, ece (from scikit-learn's calibration_curve), and that every bootstrap interval
holds its value. Multi-label runs (a ``macro_auc`` column): per finding, its probability at 0.5 on the
images whose value of it is known, label accuracy and macro_auc.

report.json (when there is one): its leaderboard rows are those of leaderboard.csv, each with its
predictions; comparisons.csv holds its comparisons; every pair's AUCs (scikit-learn) and DeLong test (the
1988 structural components, written here), the exact McNemar p-values (scipy's binomial test) at argmax
and at the leaderboard's op_threshold, and their Holm corrections (written here) are recomputed from the
first seed of each model, and the best and tied heads of each task follow from them; the ensemble's
probabilities are the mean of its members'. With cv_folds.csv: cv_summary.csv's counts, means, sds,
corrected intervals, mean ranks and test AUCs.

subgroups.csv (with --subgroups; predictions.csv names each image's subgroup): its counts, AUCs and the
sensitivity and specificity at op_threshold per subgroup, and report.json's largest gaps (verify_subgroups.py).

Not checkable from test predictions, so not checked: the validation columns (val_*, op_val_*,
op_threshold, best_val_loss, best_epoch), which heads the ensemble averages (chosen on validation), the
bootstrap interval bounds (resampled), Newcombe's intervals of paired differences, and the cross-validation's
Friedman and post-hoc tests.

grid.csv (when there is one) records the selection: each model's highest selection score (the validation number
run.json's select_by names) must be the point whose every trained seed has its leaderboard rows, one per task, and
its predictions, with the validation loss of those heads. predictions.csv must hold probabilities (a row's summing
to 1 but in a multi-label run), known splits, labels among the classes and the decision its probabilities give;
leaderboard.csv, predictions.csv and report.json must agree on every cell they share. With SHA256SUMS (written
last by the run), every file it lists must still hold the bytes the run wrote. Not checked beyond SHA256SUMS: the
prose of report.json's sections and leaderboard.md (renderings of the numbers checked here), the plots, the
heads' files, grid.csv's other validation columns, the published references, and predictions.csv's image paths
(only that every head scored the same images). Runs from before SHA256SUMS, report.json or grid.csv are checked
as far as what they wrote allows.

With --model-card PATH (a MODEL_CARD.md written beside an export, or its folder; several may be given): every
value of the card's metadata against the run's files it was copied from, and the exported files beside it
against the SHA-256 the card lists (verify_card.py).

Exits 1 and lists the differences if any number disagrees; 2 with one line when the folder cannot be read.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm, rankdata
from scipy.stats import t as student_t
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

from benchmark.evaluation.verify_files import (
    GRID_KEY,
    VerifyError,
    as_numbers,
    leaderboard_numbers,
    load_grid,
    load_leaderboard_text,
    load_predictions,
    load_report,
    load_run,
    number,
    read_table,
    reading,
)
from benchmark.evaluation.verify_subgroups import check_subgroups, load_subgroups
from benchmark.run_folder import (
    COMPARISONS_CSV,
    CV_FOLDS_CSV,
    CV_SUMMARY_CSV,
    GRID_CSV,
    LEADERBOARD_CSV,
    PREDICTIONS_CSV,
    REPORT_JSON,
    RUN_JSON,
    SUBGROUPS_CSV,
    VERIFIED_FILES,
    RunFolder,
    RunInfo,
)
from common.files import CHECKSUMS, DamagedFileError, check_checksums
from features.data.records import Label

TOLERANCE = 1e-9


def sklearn_metrics(y_true: np.ndarray, y_pred: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """The leaderboard's binary metrics, as scikit-learn computes them."""
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[False, True]).ravel()
    both = len(set(y_true.tolist())) == 2
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "sensitivity": recall_score(y_true, y_pred, zero_division=np.nan),
        "specificity": recall_score(~y_true, ~y_pred, zero_division=np.nan),
        "precision": precision_score(y_true, y_pred, zero_division=np.nan),
        "f1": f1_score(y_true, y_pred, zero_division=np.nan),
        "auc": roc_auc_score(y_true, score) if both else math.nan,
        "tp": tp,
        "fn": fn,
        "fp": fp,
        "tn": tn,
    }


def _check_operating_point(row, y_true: np.ndarray, score: np.ndarray) -> list[str]:
    """The test counts and ratios at the validation-chosen threshold, recomputed."""
    threshold = getattr(row, "op_threshold", math.nan)
    # A test score within rounding of the threshold could fall either side once written to CSV.
    if math.isnan(threshold) or np.any(np.abs(score - threshold) < 1e-6):
        return []
    expected = sklearn_metrics(y_true, score >= threshold, score)
    problems = []
    for metric in ("sensitivity", "specificity", "precision", "tp", "fn", "fp", "tn"):
        got, value = getattr(row, f"op_test_{metric}"), expected[metric]
        if not ((math.isnan(value) and math.isnan(got)) or abs(float(got) - float(value)) <= TOLERANCE):
            problems.append(f"{row.head_id} {row.task} op_test_{metric}: leaderboard {got}, scikit-learn {value}")
    return problems


def sklearn_ece(y_true: np.ndarray, score: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width bins, from scikit-learn's reliability curve."""
    # A positive-class score is a sum of float32 softmax outputs and can pass 1 by a rounding step, which
    # calibration_curve refuses; the harness's ECE clips to [0, 1] the same way (metrics.reliability_bins).
    score = np.clip(np.asarray(score, dtype=np.float64), 0.0, 1.0)
    frequency, confidence = calibration_curve(y_true, score, n_bins=bins, strategy="uniform")
    # calibration_curve drops empty bins; count the cases per bin the way it assigns them.
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], score), minlength=bins)
    return float(np.sum(counts[counts > 0] / len(score) * np.abs(frequency - confidence)))


def _check_consistency(row, head: pd.DataFrame, y_true: np.ndarray, score: np.ndarray) -> list[str]:
    """n_test, ECE, and each bootstrap interval around its value."""
    problems = []
    if int(row.n_test) != len(y_true):
        problems.append(f"{row.head_id} {row.task} n_test: leaderboard {row.n_test}, predictions {len(y_true)}")
    ece = sklearn_ece(y_true, score) if len(set(y_true.tolist())) == 2 else math.nan
    if not math.isnan(ece) and abs(row.ece - ece) > 1e-6:
        problems.append(f"{row.head_id} {row.task} ece: leaderboard {row.ece}, scikit-learn {ece}")
    for metric in ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc"):
        low, high, value = (getattr(row, f"{metric}_ci_low", math.nan), getattr(row, f"{metric}_ci_high", math.nan),
                            getattr(row, metric))  # fmt: skip
        if not any(math.isnan(v) for v in (low, high, value)) and not low - 1e-9 <= value <= high + 1e-9:
            problems.append(f"{row.head_id} {row.task} {metric}: {value} outside its interval {low}–{high}")
    return problems




def check_files(results_dir: Path) -> list[str]:
    """The files the run listed in its SHA256SUMS still hold the bytes it wrote: each file verify reads named, then
    the first of the rest (plots, heads) that differs. Nothing to check in a run from before SHA256SUMS."""
    problems = []
    for name in VERIFIED_FILES:
        try:
            if (results_dir / name).is_file() and not check_checksums(results_dir, [name]):
                return []  # no SHA256SUMS
        except DamagedFileError as error:
            problems.append(str(error))
    try:
        check_checksums(results_dir)
    except DamagedFileError as error:
        problems.append(str(error))
    return problems


def verify(results_dir: Path) -> list[str]:
    """Differences between the run's outputs and their recomputation from predictions.csv (empty if none), and
    files changed since the run wrote them (SHA256SUMS).

    leaderboard.csv always; report.json, comparisons.csv and the ensemble when the run wrote report.json (an
    older run did not); the selected heads when there is a grid.csv; cv_summary.csv when there is a cv_folds.csv.
    ``VerifyError`` (one line naming the file) when a file is missing, cannot be read or holds a damaged value.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise VerifyError(f"no results folder {results_dir}")
    changed = check_files(results_dir)
    try:
        problems = _recompute(results_dir)
    except OSError as error:  # a file verify may not read (permissions), or an I/O error
        raise VerifyError(f"cannot read {error.filename or results_dir}: {error.strerror or error}") from error
    except VerifyError as error:
        # The file is most likely damaged, not written so by the run: say so where SHA256SUMS knows.
        raise VerifyError(f"{error} ({changed[0]})" if changed else str(error)) from error.__cause__
    # One missing head is named once, not once per task and per check.
    return list(dict.fromkeys(changed + problems))


def _recompute(results_dir: Path) -> list[str]:
    """verify's checks of the files' contents (``verify``)."""
    paths = {name: RunFolder(results_dir).file(name) for name in VERIFIED_FILES}
    text = load_leaderboard_text(paths[LEADERBOARD_CSV])
    board = leaderboard_numbers(text, paths[LEADERBOARD_CSV])
    predictions = load_predictions(paths[PREDICTIONS_CSV], multi_label="macro_auc" in board)
    check_positives(board, predictions, paths[LEADERBOARD_CSV])
    run = load_run(paths[RUN_JSON])
    with reading(paths[LEADERBOARD_CSV], paths[PREDICTIONS_CSV]):
        problems = check_heads(board, predictions) + check_classes(run, predictions)
        internal = board[board["eval_set"] == "internal"] if "eval_set" in board else board
        # An external test set's leaderboard rows are checked by the tests; its comparisons are checked below.
        problems += check_leaderboard(internal, predictions[predictions["split"] == "test"])
    report = load_report(paths[REPORT_JSON])
    if report is not None:
        with reading(paths[REPORT_JSON], paths[COMPARISONS_CSV], paths[LEADERBOARD_CSV]):
            problems += check_report(report, board, predictions, results_dir, text)
    grid = load_grid(paths[GRID_CSV])
    if grid is not None:
        with reading(paths[GRID_CSV], paths[RUN_JSON], paths[LEADERBOARD_CSV]):
            problems += check_selection(grid, board, predictions, run, paths[GRID_CSV])
    with reading(paths[CV_FOLDS_CSV], paths[CV_SUMMARY_CSV]):
        problems += check_crossval(results_dir, board)
    subgroups = load_subgroups(paths[SUBGROUPS_CSV])
    if subgroups is not None:
        with reading(paths[SUBGROUPS_CSV], paths[PREDICTIONS_CSV], paths[LEADERBOARD_CSV]):
            problems += check_subgroups(subgroups, internal, predictions[predictions["split"] == "test"],
                                        lambda head, positive: _task_cases(head, positive, "macro_auc" in board),
                                        report)  # fmt: skip
    return problems


def _task_cases(head: pd.DataFrame, positive: str, multi_label: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A task's truth and positive-side score on the images it scores, and which of ``head``'s rows those are
    (multi-label: the images whose value of the finding is known; else every one)."""
    if multi_label:
        known, shown = _finding_values(head, positive)
        return shown[known], head[f"p_{positive}"].to_numpy(dtype=np.float64)[known], known
    truth, _, score = _class_task(head, positive)
    return truth, score, np.ones(len(head), dtype=bool)


def check_positives(board: pd.DataFrame, predictions: pd.DataFrame, path: Path) -> None:
    """``VerifyError`` naming the first leaderboard line whose positive side names no class of predictions.csv."""
    classes = {column[2:] for column in predictions if column.startswith("p_")}
    multi_label = "macro_auc" in board
    for line, positive in enumerate(board["positive"], start=2):
        if not ({positive} if multi_label else set(Label.parse(positive, multi_label=False).classes)) <= classes:
            raise VerifyError(f"{path} line {line}: positive {positive!r} names no class of predictions.csv "
                              f"({', '.join(sorted(classes))})")  # fmt: skip


def check_classes(run: RunInfo | None, predictions: pd.DataFrame) -> list[str]:
    """predictions.csv's probability columns are run.json's classes, in order (nothing to check without run.json)."""
    classes = (run.classes if run else None) or []
    columns = [column[2:] for column in predictions if column.startswith("p_")]
    if classes and columns != classes:
        return [f"{PREDICTIONS_CSV}'s probability columns ({', '.join(columns)}) are not {RUN_JSON}'s classes "
                f"({', '.join(classes)})"]  # fmt: skip
    return []


# The columns that say which head a row is about: the same on each of its rows, in both files.
HEAD_COLUMNS = (*GRID_KEY, "seed")


def _same_cell(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def _head_problems(board: pd.DataFrame, predictions: pd.DataFrame) -> list[str]:
    """Each head's rows agree on which head it is, in each file and between them."""
    problems = []
    columns = [column for column in HEAD_COLUMNS if column in board and column in predictions]
    for name, frame in ((LEADERBOARD_CSV, board), (PREDICTIONS_CSV, predictions)):
        distinct = frame.drop_duplicates(["head_id", *columns])
        problems += [f"{name}: the rows of {head} disagree on which head it is ({', '.join(columns)})"
                     for head in dict.fromkeys(distinct.loc[distinct["head_id"].duplicated(), "head_id"])]  # fmt: skip
    on_board = board.drop_duplicates("head_id").set_index("head_id")
    for head, row in predictions.drop_duplicates("head_id").set_index("head_id").iterrows():
        if head not in on_board.index:
            problems.append(f"predictions.csv has rows of {head}, which leaderboard.csv does not list")
            continue
        differ = [column for column in columns if not _same_cell(row[column], on_board.at[head, column])]
        if differ:
            problems.append(f"predictions.csv and leaderboard.csv disagree on the {', '.join(differ)} of {head}")
    return problems


def check_heads(board: pd.DataFrame, predictions: pd.DataFrame) -> list[str]:
    """Each head is the same head on all its rows (leaderboard.csv and predictions.csv alike), every head with
    predictions is on the leaderboard, and each head of a test set has its predictions and a row for every task
    of that set, once."""
    problems = _head_problems(board, predictions)
    eval_sets = board["eval_set"] if "eval_set" in board else pd.Series("internal", index=board.index)
    for eval_set, rows in board.groupby(eval_sets, sort=False):
        twice = rows.loc[rows.duplicated(["head_id", "task"]), ["head_id", "task"]]
        problems += [f"leaderboard.csv has the {eval_set} row of {head} on {task} more than once"
                     for head, task in twice.itertuples(index=False)]  # fmt: skip
        split = "test" if eval_set == "internal" else eval_set
        scored = set(predictions.loc[predictions["split"] == split, "head_id"])
        tasks = list(dict.fromkeys(rows["task"]))
        for head, head_rows in rows.groupby("head_id", sort=False):
            if head not in scored:
                problems.append(f"predictions.csv has no {split} rows of {head}")
            problems += [_lacks(eval_set, head, task) for task in tasks if task not in set(head_rows["task"])]
    return problems


def check_leaderboard(board: pd.DataFrame, predictions: pd.DataFrame) -> list[str]:
    """Differences between leaderboard rows and scikit-learn on the test predictions (empty if none)."""
    problems = []
    multi_label = "macro_auc" in board
    for row in board.itertuples():
        head = predictions[predictions["head_id"] == row.head_id]
        if head.empty:
            problems.append(f"predictions.csv has no test rows of {row.head_id}")
            continue
        probability_columns = [c for c in head.columns if c.startswith("p_")]
        classes = [c[2:] for c in probability_columns]
        if multi_label:
            y_true, y_pred, score = _finding_task(head, row.positive)
            problems += _check_multi_label(row, head, classes)
        else:
            y_true, y_pred, score = _class_task(head, row.positive)
            argmax = np.array(classes)[head[probability_columns].to_numpy().argmax(axis=1)]
        expected = sklearn_metrics(y_true, y_pred, score)
        for metric, value in expected.items():
            got = getattr(row, metric)
            same = (math.isnan(value) and math.isnan(got)) or abs(float(got) - float(value)) <= TOLERANCE
            if not same:
                problems.append(f"{row.head_id} {row.task} {metric}: leaderboard {got}, scikit-learn {value}")
        problems += _check_operating_point(row, y_true, score)
        problems += _check_consistency(row, head, y_true, score)
        if not multi_label:
            three_class = accuracy_score(head["label"], argmax)
            if abs(three_class - row.multiclass_accuracy) > TOLERANCE:
                problems.append(f"{row.head_id} multiclass_accuracy: {row.multiclass_accuracy} vs {three_class}")
    return problems


def _class_task(head: pd.DataFrame, positive: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One task's truth, argmax decision and positive-group score (``positive``: classes joined by ``+``)."""
    probability_columns = [c for c in head.columns if c.startswith("p_")]
    classes = np.array([c[2:] for c in probability_columns])
    positives = list(Label.parse(positive, multi_label=False).classes)
    y_true = head["label"].isin(positives).to_numpy()
    y_pred = np.isin(classes[head[probability_columns].to_numpy().argmax(axis=1)], positives)
    score = head[[f"p_{name}" for name in positives]].sum(axis=1).to_numpy()
    return y_true, y_pred, score


def _finding_values(head: pd.DataFrame, finding: str) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label: whether each image's value of ``finding`` is known (no ``?`` mark), and whether it is shown."""
    labels = (Label.parse(text, multi_label=True) for text in head["label"].astype(str))
    targets = np.array([label.targets((finding,))[0] for label in labels])
    return ~np.isnan(targets), targets == 1.0


def _finding_task(head: pd.DataFrame, finding: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-label: one finding's truth, decision at 0.5 and score on the images whose value of it is known."""
    known, shown = _finding_values(head, finding)
    score = head[f"p_{finding}"].to_numpy(dtype=np.float64)[known]
    return shown[known], score >= 0.5, score


def _check_multi_label(row, head: pd.DataFrame, classes: list[str]) -> list[str]:
    """Multi-label: the row's label accuracy and macro AUC, recomputed over every finding."""
    right, total, aucs = 0, 0, []
    for finding in classes:
        y_true, y_pred, score = _finding_task(head, finding)
        right, total = right + int(np.sum(y_true == y_pred)), total + len(y_true)
        if len(set(y_true.tolist())) == 2:
            aucs.append(roc_auc_score(y_true, score))
    problems = []
    for name, expected in (("multiclass_accuracy", right / total if total else math.nan),
                           ("macro_auc", float(np.mean(aucs)) if aucs else math.nan)):  # fmt: skip
        got = getattr(row, name)
        if not (math.isnan(expected) and math.isnan(got)) and abs(got - expected) > TOLERANCE:
            problems.append(f"{row.head_id} {name}: leaderboard {got}, scikit-learn {expected}")
    return problems


# The verdict's name for the mean of its members (benchmark.evaluation.verdict.ENSEMBLE), written out rather than
# imported: verify loads none of the code whose numbers it checks.
ENSEMBLE = "ensemble"


def _close(got: float, want: float, p_value: bool) -> bool:
    """Same within verify's tolerance: relative 1e-3 for z and p-values, absolute 1e-6 for AUCs and differences."""
    if math.isnan(got) or math.isnan(want):
        return math.isnan(got) and math.isnan(want)
    if math.isinf(got) or math.isinf(want):
        return got == want
    return math.isclose(got, want, rel_tol=1e-3, abs_tol=1e-12) if p_value else abs(got - want) <= 1e-6


def _same_number(got: float, want: float) -> bool:
    """The same number written twice (CSV and JSON): equal to the last digits, NaN equal to NaN."""
    if math.isnan(got) or math.isnan(want):
        return math.isnan(got) and math.isnan(want)
    return got == want or math.isclose(got, want, rel_tol=1e-12)


# ---- DeLong, DeLong & Clarke-Pearson (1988), written out independently of benchmark.evaluation.comparisons


def structural_components(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: ``V10`` per positive (the share of negatives it outscores) and ``V01`` per
    negative (the share of positives that outscore it), ties counting one half.

    Every positive is compared with every negative, O(m·n), in blocks of positives so memory stays bounded.
    """
    m, n = len(positives), len(negatives)
    v10, v01 = np.empty(m), np.zeros(n)
    step = max(1, 4_000_000 // max(n, 1))
    for start in range(0, m, step):
        block = positives[start : start + step, None]
        psi = (block > negatives[None, :]) + 0.5 * (block == negatives[None, :])
        v10[start : start + step] = psi.mean(axis=1)
        v01 += psi.sum(axis=0)
    return v10, v01 / m


def _covariance(x: np.ndarray, y: np.ndarray) -> float:
    # Written out so that identical components give exactly equal terms, and an exactly zero variance.
    return float(np.sum((x - x.mean()) * (y - y.mean())) / (len(x) - 1))


def _normal_test(difference: float, variance: float) -> tuple[float, float]:
    """Two-sided z test; with zero variance p is 1 for no difference and 0 for any (as comparisons.csv records)."""
    if math.isnan(difference) or math.isnan(variance):
        return math.nan, math.nan
    if variance <= 0:
        return (0.0, 1.0) if difference == 0 else (math.copysign(math.inf, difference), 0.0)
    z = difference / math.sqrt(variance)
    return z, float(2 * norm.sf(abs(z)))


def delong_1988(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """AUC(a) − AUC(b) on the same cases with DeLong's test, named as comparisons.csv's columns.

    The variance of the difference is ``L S Lᵀ`` with ``L = (1, −1)`` and ``S = S10 / m + S01 / n``, the sample
    covariances of the structural components over the m positives and n negatives; NaN with fewer than two of
    either. The interval is the normal one at ``level``.
    """
    y_true = np.asarray(y_true, dtype=bool)
    scores = [np.asarray(score, dtype=np.float64) for score in (score_a, score_b)]
    m, n = int(y_true.sum()), int((~y_true).sum())
    if m == 0 or n == 0:
        return dict.fromkeys(("auc_a", "auc_b", "delta_auc", "delta_auc_low", "delta_auc_high", "z", "p"), math.nan)
    (v10_a, v01_a), (v10_b, v01_b) = (structural_components(s[y_true], s[~y_true]) for s in scores)
    difference = float(v10_a.mean() - v10_b.mean())
    variance = math.nan
    if m >= 2 and n >= 2:
        s10 = _covariance(v10_a, v10_a) + _covariance(v10_b, v10_b) - 2 * _covariance(v10_a, v10_b)
        s01 = _covariance(v01_a, v01_a) + _covariance(v01_b, v01_b) - 2 * _covariance(v01_a, v01_b)
        variance = s10 / m + s01 / n
    z, p = _normal_test(difference, variance)
    half = math.nan if math.isnan(variance) else norm.ppf((1 + level) / 2) * math.sqrt(max(variance, 0.0))
    return {"auc_a": float(v10_a.mean()), "auc_b": float(v10_b.mean()), "delta_auc": difference,
            "delta_auc_low": difference - half, "delta_auc_high": difference + half, "z": z, "p": p}  # fmt: skip


def exact_mcnemar(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p: the binomial test of ``only_a`` of the discordant cases at one half; 1 without any."""
    discordant = only_a + only_b
    return 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values: the i-th smallest of k times (k − i + 1), kept non-decreasing, at most 1.
    NaN ones stay NaN and do not count in the family.

    Written out, and checked against statsmodels' ``multipletests`` in the tests: its Holm runs a full garbage
    collection on every call, half a second each in a process that holds TensorFlow.
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p_values.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p_values))
    order = finite[np.argsort(p_values[finite], kind="stable")]
    steps = p_values[order] * np.arange(len(order), 0, -1)
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted


# ---- the verdict: every pair of first-seed heads per task, and the best and tied heads that follow

# Raw p-value column -> its Holm-adjusted column; each is a family of its own within a task.
HOLM_FAMILIES = {"p": "p_holm", "sensitivity_mcnemar_p": "sensitivity_p_holm",
                 "specificity_mcnemar_p": "specificity_p_holm", "op_sensitivity_mcnemar_p": "op_sensitivity_p_holm",
                 "op_specificity_mcnemar_p": "op_specificity_p_holm"}  # fmt: skip


@dataclass
class TaskCases:
    """One task's test cases as the verdict sees them: the truth and, per head, its score, its decision (argmax, or
    0.5 for a finding) and its decision at the validation threshold (None where that cannot be recomputed)."""

    truth: np.ndarray
    scores: dict[str, np.ndarray]
    decisions: dict[str, np.ndarray]
    at_threshold: dict[str, np.ndarray | None]

    def aucs(self) -> dict[str, float]:
        """Each head's AUC (scikit-learn)."""
        return {name: float(roc_auc_score(self.truth, score)) for name, score in self.scores.items()}


def first_seed_heads(predictions: pd.DataFrame) -> dict[str, str]:
    """Model name -> head id of its lowest seed (the first listed on a tie), in the order the models first appear."""
    heads = predictions.drop_duplicates("head_id")
    firsts = heads.sort_values("seed", kind="stable").drop_duplicates("backbone")
    order = list(dict.fromkeys(heads["backbone"]))
    by_name = dict(zip(firsts["backbone"], firsts["head_id"], strict=True))
    return {name: by_name[name] for name in order}


def _at_threshold(score: np.ndarray, threshold: float) -> np.ndarray | None:
    # A test score within rounding of the threshold could fall either side once written to CSV.
    if math.isnan(threshold) or np.any(np.abs(score - threshold) < 1e-6):
        return None
    return score >= threshold


def task_cases(heads: dict[str, pd.DataFrame], positive: str, multi_label: bool,
               thresholds: dict[str, float]) -> TaskCases:  # fmt: skip
    """The task's cases on ``heads`` (each head's prediction rows, the same images in the same order)."""
    truth, scores, decisions, at_threshold = np.zeros(0, dtype=bool), {}, {}, {}
    for name, head in heads.items():
        truth, decision, score = _finding_task(head, positive) if multi_label else _class_task(head, positive)
        scores[name], decisions[name] = score, decision
        at_threshold[name] = _at_threshold(score, thresholds.get(name, math.nan))
    return TaskCases(truth, scores, decisions, at_threshold)


def _mcnemar_columns(prefix: str, truth: np.ndarray, decision_a: np.ndarray, decision_b: np.ndarray) -> dict:
    """Paired sensitivity (on the positives) and specificity (negatives): the difference and exact McNemar p."""
    out = {}
    for metric, cases in (("sensitivity", truth), ("specificity", ~truth)):
        right_a, right_b = (decision_a == truth)[cases], (decision_b == truth)[cases]
        only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
        out[f"{prefix}delta_{metric}"] = (only_a - only_b) / len(right_a) if len(right_a) else math.nan
        out[f"{prefix}{metric}_mcnemar_p"] = exact_mcnemar(only_a, only_b) if len(right_a) else math.nan
    return out


def expected_pair(cases: TaskCases, aucs: dict[str, float], a: str, b: str) -> dict[str, float]:
    """comparisons.csv's columns of ``a`` against ``b`` as recomputed here, but the Holm ones (a task's family);
    ``aucs``: scikit-learn's AUC of each head."""
    out = delong_1988(cases.truth, cases.scores[a], cases.scores[b])
    out["auc_a"], out["auc_b"] = aucs[a], aucs[b]
    out |= _mcnemar_columns("", cases.truth, cases.decisions[a], cases.decisions[b])
    if cases.at_threshold[a] is not None and cases.at_threshold[b] is not None:
        out |= _mcnemar_columns("op_", cases.truth, cases.at_threshold[a], cases.at_threshold[b])
    return out


def _add_holm(expected: list[dict], rows: list[dict]) -> None:
    """Each family's Holm p-values over the task's pairs, into ``expected``."""
    for raw, adjusted in HOLM_FAMILIES.items():
        # An operating-point p-value too close to call stands as recorded, so the rest of its family is checked.
        values = [want.get(raw, number(row.get(raw))) for want, row in zip(expected, rows, strict=True)]
        for want, value in zip(expected, holm(values), strict=True):
            want[adjusted] = float(value)


def _compare(label: str, row: dict, want: dict) -> list[str]:
    """The recorded values of ``row`` that differ from ``want``."""
    out = []
    for column, value in want.items():
        got = number(row.get(column))
        p_value = column in ("z", "p", "p_holm") or column.endswith(("_mcnemar_p", "_p_holm"))
        if not _close(got, value, p_value):
            out.append(f"{label} {column}: recorded {got}, recomputed {value}")
    return out


def _check_pairs_listed(where: str, verdict: dict, names: list[str], rows: list[dict]) -> list[str]:
    """The verdict's heads are the first seeds scored, and the comparisons hold each pair of them once."""
    problems = []
    if set(verdict.get("heads", [])) != set(names):
        problems.append(f"verdict {where}: compares {sorted(verdict.get('heads', []))}, but predictions.csv holds the "
                        f"first seeds of {sorted(names)}")  # fmt: skip
    wanted = {frozenset((a, b)) for i, a in enumerate(names) for b in names[i + 1 :]}
    listed = [frozenset((row["a"], row["b"])) for row in rows]
    for pair in sorted(wanted - set(listed), key=sorted):
        problems.append(f"comparisons {where}: no row for the pair {' vs '.join(sorted(pair))}")
    for pair in sorted(set(listed) - wanted, key=sorted):
        problems.append(f"comparisons {where}: a row for {' vs '.join(sorted(pair))}, not a pair of scored heads")
    if len(listed) != len(set(listed)):
        problems.append(f"comparisons {where}: a pair is listed more than once")
    return problems


def _apart(head: str, rows: list[dict], expected: list[dict], alpha: float) -> set[str]:
    """The heads whose pair with ``head`` has a recomputed Holm p below ``alpha``: told apart from it."""
    return {row["b"] if row["a"] == head else row["a"] for row, want in zip(rows, expected, strict=True)
            if head in (row["a"], row["b"]) and want["p_holm"] < alpha}  # fmt: skip


def _check_best_and_tied(where: str, verdict: dict, aucs: dict[str, float], rows: list[dict],
                         expected: list[dict]) -> list[str]:  # fmt: skip
    """The best head has the highest AUC; the tied ones are it and those whose pair with it has Holm p >= alpha."""
    top = max(aucs.values())
    best, alpha = verdict.get("best"), float(verdict.get("alpha", math.nan))
    if best not in aucs or aucs[best] < top - 1e-9:
        leaders = ", ".join(name for name, auc in aucs.items() if auc >= top - 1e-9)
        return [f"verdict {where}: best {best!r}, but the highest recomputed AUC ({top:.6f}) is {leaders}'s"]
    apart = _apart(best, rows, expected, alpha)
    tied = [name for name in aucs if name not in apart]
    problems = []
    if set(verdict.get("tied", [])) != set(tied):
        problems.append(f"verdict {where}: tied {sorted(verdict.get('tied', []))}, but the recomputed Holm p-values "
                        f"tie {sorted(tied)} with {best} at alpha {alpha:g}")  # fmt: skip
    different = sum(want["p_holm"] < alpha for want in expected)
    for name, value in (("n_pairs", len(expected)), ("n_different", different)):
        if verdict.get(name) != value:
            problems.append(f"verdict {where}: {name} {verdict.get(name)}, recomputed {value}")
    return problems + _check_single(where, verdict, aucs, rows, expected)


def _check_single(where: str, verdict: dict, aucs: dict[str, float], rows: list[dict],
                  expected: list[dict]) -> list[str]:  # fmt: skip
    """The same among single heads (the ensemble left out): ``best_single`` has their highest AUC, ``tied_single``
    is it and the single heads its pairs do not tell apart from it (a report.json from before them has neither)."""
    if "best_single" not in verdict:
        return []
    best, alpha = verdict["best_single"], float(verdict["alpha"])
    singles = {name: auc for name, auc in aucs.items() if name != ENSEMBLE}
    if len(aucs) < 2 or not singles:  # no pair: the verdict's best is the single one
        if best != verdict.get("best") or verdict.get("tied_single") != [best]:
            return [f"verdict {where}: best_single {best!r}, tied_single {verdict.get('tied_single')}, but with no "
                    f"pair both are the best ({verdict.get('best')!r})"]  # fmt: skip
        return []
    top = max(singles.values())
    if best not in singles or singles[best] < top - 1e-9:
        leaders = ", ".join(name for name, auc in singles.items() if auc >= top - 1e-9)
        return [f"verdict {where}: best_single {best!r}, but the highest recomputed single-head AUC ({top:.6f}) is "
                f"{leaders}'s"]  # fmt: skip
    apart = _apart(best, rows, expected, alpha)
    tied = {name for name in singles if name not in apart}
    if set(verdict.get("tied_single", [])) != tied:
        return [f"verdict {where}: tied_single {sorted(verdict.get('tied_single', []))}, but the recomputed Holm "
                f"p-values tie {sorted(tied)} with {best} at alpha {alpha:g}"]  # fmt: skip
    return []


def check_task(where: str, verdict: dict, cases: TaskCases, rows: list[dict]) -> list[str]:
    """One task's verdict and comparison rows (report.json's) against their recomputation on ``cases``."""
    names = list(cases.scores)
    problems = _check_pairs_listed(where, verdict, names, rows)
    rows = [row for row in rows if row["a"] in cases.scores and row["b"] in cases.scores]
    aucs = cases.aucs()
    expected = [expected_pair(cases, aucs, row["a"], row["b"]) for row in rows]
    _add_holm(expected, rows)
    for row, want in zip(rows, expected, strict=True):
        problems += _compare(f"comparisons {where} {row['a']} vs {row['b']}", row, want)
    return problems + _check_best_and_tied(where, verdict, aucs, rows, expected)


def _eval_rows(board: pd.DataFrame, eval_set: str) -> pd.DataFrame:
    """The leaderboard rows of one test set (a run without an external set has no ``eval_set`` column)."""
    if "eval_set" in board:
        return board[board["eval_set"] == eval_set]
    return board if eval_set == "internal" else board.iloc[0:0]


def _scored_heads(predictions: pd.DataFrame, split: str) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Each model's first-seed prediction rows on ``split``, and problems if they are not all the same images."""
    rows = predictions[predictions["split"] == split]
    by_head = dict(tuple(rows.groupby("head_id", sort=False)))
    heads = {name: by_head[head_id] for name, head_id in first_seed_heads(predictions).items() if head_id in by_head}
    images = None
    for name, head in heads.items():
        mine = head[["path", "label"]].astype(str).to_numpy()
        if images is None:
            images = (name, mine)
        elif mine.shape != images[1].shape or (mine != images[1]).any():
            return heads, [f"predictions.csv: the {split} rows of {name} are not the images of {images[0]} "
                           "(a row deleted or changed?); the verdict cannot be recomputed"]  # fmt: skip
    return heads, []


def _thresholds(board: pd.DataFrame, task: str, heads: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Each head's validation-chosen operating threshold on ``task``, from the leaderboard (NaN where none)."""
    if "op_threshold" not in board:
        return {}
    rows = board[board["task"] == task]
    by_head = dict(zip(rows["head_id"], rows["op_threshold"], strict=True))
    return {name: by_head.get(head["head_id"].iloc[0], math.nan) for name, head in heads.items()}


def check_verdict(eval_set: str, verdict: dict, comparisons: list[dict], board: pd.DataFrame,
                  predictions: pd.DataFrame) -> list[str]:  # fmt: skip
    """Every task's pairs, best and tied heads on one test set (internal, or external), recomputed."""
    heads, problems = _scored_heads(predictions, "test" if eval_set == "internal" else eval_set)
    if problems:
        return problems
    board = _eval_rows(board, eval_set)
    multi_label = "macro_auc" in board
    checked = set()
    for task, positive in dict(zip(board["task"], board["positive"], strict=True)).items():
        cases = task_cases(heads, positive, multi_label, _thresholds(board, task, heads))
        if not heads or cases.truth.all() or not cases.truth.any():
            continue  # the verdict leaves out a task whose images hold one class
        checked.add(task)
        where = f"{eval_set} {task}"
        if task not in verdict:
            problems.append(f"verdict {where}: missing from {REPORT_JSON}")
            continue
        rows = [row for row in comparisons if row.get("eval_set") == eval_set and row.get("task") == task]
        problems += check_task(where, verdict[task], cases, rows)
    problems += [f"verdict {eval_set} {task}: no such task with both classes among the leaderboard's {eval_set} rows"
                 for task in verdict if task not in checked]  # fmt: skip
    return problems


# ---- report.json against the files, and the ensemble


def _lacks(eval_set: str, head: str, task: str) -> str:
    """The one wording of a missing leaderboard row, so that checks finding the same gap name it once."""
    return f"leaderboard.csv lacks the {eval_set} row of {head} on {task}"


def _same_value(text: str, value) -> bool:
    """A leaderboard cell as written against report.json's value of it: numbers to the last digit, the rest as
    text (JSON null is an empty cell; a name pandas wrote back as a number still equals it)."""
    if value is None:
        return text.strip() == ""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return text == str(value)
    try:
        return (isinstance(value, str) and text == value) or _same_number(number(text), float(value))
    except ValueError:
        return False


def _same_rows(eval_set: str, listed: list[dict], text: pd.DataFrame) -> list[str]:
    """report.json's leaderboard rows of ``eval_set`` are leaderboard.csv's (``text``: its cells as written), every
    column the same."""
    on_file = {(row["head_id"], row["task"]): row for row in text.to_dict("records")}
    in_report = {(row.get("head_id"), row.get("task")): row for row in listed}
    problems = [_lacks(eval_set, head, task) for head, task in in_report if (head, task) not in on_file]
    problems += [f"leaderboard.csv has an {eval_set} row of {head} on {task} that report.json does not list"
                 for head, task in on_file if (head, task) not in in_report]  # fmt: skip
    listed_columns = dict.fromkeys(column for row in listed for column in row)
    problems += [f"leaderboard.csv lacks the column {column} that report.json's rows hold"
                 for column in listed_columns if column not in text]  # fmt: skip
    problems += [f"leaderboard.csv has a column {column} that report.json's rows lack"
                 for column in text if listed and column != "eval_set" and column not in listed_columns]  # fmt: skip
    for key in in_report.keys() & on_file.keys():
        for column, value in in_report[key].items():
            if column in text and not _same_value(on_file[key][column], value):
                problems.append(f"leaderboard.csv {key[0]} {key[1]} {column}: {on_file[key][column]!r}, report.json "
                                f"{value!r}")  # fmt: skip
    return problems


def check_rows(data: dict, text: pd.DataFrame, predictions: pd.DataFrame) -> list[str]:
    """Every head row report.json lists is in leaderboard.csv (``text``: its cells as written) with the same cells,
    and back, and has its predictions."""
    problems = []
    for eval_set, key in (("internal", "leaderboard"), ("external", "external_leaderboard")):
        listed = data.get(key) or []
        problems += _same_rows(eval_set, listed, _eval_rows(text, eval_set))
        split = "test" if eval_set == "internal" else eval_set
        have = set(predictions.loc[predictions["split"] == split, "head_id"])
        problems += [f"predictions.csv has no {split} rows of {head}"
                     for head in dict.fromkeys(row.get("head_id") for row in listed) if head not in have]  # fmt: skip
    return problems


def check_comparisons_file(rows: list[dict], path: Path) -> list[str]:
    """comparisons.csv holds report.json's comparison rows, in order, to the last digit written."""
    if not path.is_file():
        return [f"{path.name} is missing; report.json holds {len(rows)} comparisons"]
    text = {"eval_set": str, "task": str, "a": str, "b": str}
    frame = read_table(path, tuple(text), dtype=text)
    columns = list(rows[0]) if rows else list(frame.columns)
    if len(frame) != len(rows) or list(frame.columns) != columns:
        return [f"{path.name} has {len(frame)} rows of {len(frame.columns)} columns, report.json's comparisons "
                f"{len(rows)} of {len(columns)}"]  # fmt: skip
    frame = as_numbers(frame, path, [c for c in columns if c not in text], missing_ok=True)
    problems = []
    for line, (on_file, row) in enumerate(zip(frame.to_dict("records"), rows, strict=True), start=2):
        for column in columns:
            got, want = on_file[column], row.get(column)
            same = got == want if column in text else _same_number(got, number(want))
            if not same:
                pair = f"{row['eval_set']} {row['task']} {row['a']} vs {row['b']}"
                problems.append(f"{path.name} line {line} ({pair}) {column}: {got}, report.json {want}")
    return problems


def check_ensemble(ensemble: dict, predictions: pd.DataFrame) -> list[str]:
    """The ensemble's probabilities are the mean of its members' (first seeds), on every split it was scored on."""
    members = list(ensemble.get("members") or [])
    rows = predictions[predictions["backbone"] == ENSEMBLE]
    best = ensemble.get("validation_best")  # chosen on validation, so only its name can be checked
    problems = [] if best is None or best in first_seed_heads(predictions) else \
        [f"ensemble: validation_best {best!r} is no model of {PREDICTIONS_CSV}"]  # fmt: skip
    if len(members) < 2:
        return problems + ([] if rows.empty else ["predictions.csv has ensemble rows, but report.json names no "
                                                  "ensemble"])  # fmt: skip
    firsts = first_seed_heads(predictions)
    missing = [name for name in members if name not in firsts]
    if missing:
        return problems + [f"ensemble: predictions.csv has no rows of its member(s) {', '.join(missing)}"]
    if list(ensemble.get("head_ids", [])) != [firsts[name] for name in members]:
        problems.append(f"ensemble: head_ids {ensemble.get('head_ids')} are not the first seeds of {members}")
    if not (rows["split"] == "test").any():
        problems.append("predictions.csv has no test rows of the ensemble")
    columns = [column for column in predictions if column.startswith("p_")]
    for split, mean_rows in rows.groupby("split", sort=False):
        parts = [predictions[(predictions["head_id"] == firsts[name]) & (predictions["split"] == split)]
                 for name in members]  # fmt: skip
        if any(part["path"].tolist() != mean_rows["path"].tolist() for part in parts):
            problems.append(f"ensemble: its {split} images are not those of its members {members}")
            continue
        mean = np.mean([part[columns].to_numpy() for part in parts], axis=0)
        gap = float(np.max(np.abs(mean_rows[columns].to_numpy() - mean)))
        if gap > 1e-5:
            problems.append(f"ensemble: its {split} probabilities differ from the mean of {', '.join(members)} "
                            f"by up to {gap:.3g}")  # fmt: skip
    return problems


def check_report(data: dict, board: pd.DataFrame, predictions: pd.DataFrame, results_dir: Path,
                 text: pd.DataFrame) -> list[str]:  # fmt: skip
    """report.json against leaderboard.csv (``board``; ``text``: its cells as written), comparisons.csv and the
    recomputed verdict and ensemble."""
    problems = check_rows(data, text, predictions)
    problems += check_comparisons_file(data["comparisons"], RunFolder(results_dir).file(COMPARISONS_CSV))
    problems += check_verdict("internal", data["verdict"], data["comparisons"], board, predictions)
    # A grouped external set gets no verdict, so one is only checked where the run wrote it.
    if data.get("external_verdict"):
        problems += check_verdict("external", data["external_verdict"], data["comparisons"], board, predictions)
    return problems + check_ensemble(data["ensemble"], predictions)


# ---- the selection: grid.csv's selected point per model, and its heads on the leaderboard and in predictions.csv


def _select_by(run: RunInfo | None, board: pd.DataFrame) -> str | None:
    """The validation number the run selected by: run.json's, else the leaderboard's; None where neither says."""
    chosen = (run.config if run else {}).get("select_by")
    if chosen is None and "config_select_by" in board and len(board):
        chosen = board["config_select_by"].iloc[0]
    return chosen or None


def _expected_scores(grid: pd.DataFrame, select_by: str) -> pd.Series | None:
    """Each point's selection score from its validation columns (higher is better); None where grid.csv does not
    keep the number selected by (``TASK.accuracy``, say)."""
    if select_by == "val_loss":
        return -grid["val_loss"] if "val_loss" in grid else None
    column = "val_macro_auc" if select_by == "macro_auc" else "val_{}_{}".format(*select_by.partition(".")[::2])
    return grid[column] if column in grid else None


def _check_scores(grid: pd.DataFrame, select_by: str | None, tasks: set[str]) -> list[str]:
    """grid.csv's selection_score of each trained point is the validation number the run selected by."""
    if select_by is None:
        return []
    if select_by not in ("val_loss", "macro_auc") and select_by.partition(".")[0] not in tasks:
        return [f"the run selected by {select_by!r} (run.json), which is not val_loss, macro_auc or TASK.METRIC of a "
                "task of the leaderboard"]  # fmt: skip
    expected = _expected_scores(grid, select_by)
    if expected is None:
        return []
    problems = []
    for line, (got, want, seeds) in enumerate(zip(grid["selection_score"], expected, grid["seeds"], strict=True), 2):
        if seeds > 0 and got != want and not abs(got - want) <= 1e-12:
            problems.append(f"grid.csv line {line} selection_score: {got}, but its {select_by} gives {want}")
    return problems


def _model(backbone: str, kind: str) -> str:
    """The name a grid point's heads carry on the leaderboard: the backbone, with ``-<kind>`` for a probe."""
    return backbone if kind == "keras" else f"{backbone}-{kind}"


def grid_winners(grid: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per model, the grid point grid.csv records as selected: the highest selection score among the points with a
    trained seed (every point at that score, where several tie)."""
    done = grid[grid["seeds"] > 0]
    names = pd.Series([_model(b, k) for b, k in zip(done["backbone"], done["kind"], strict=True)], index=done.index)
    return {name: rows[rows["selection_score"] == rows["selection_score"].max()]
            for name, rows in done.groupby(names, sort=False)}  # fmt: skip


# A point's settings beside the model's name: how grid.csv and the leaderboard tell its points apart.
POINT = ("image_size", "kind", "lr", "dropout", "l2", "lr_schedule")


def _points(frame: pd.DataFrame) -> set[tuple]:
    return set(frame[list(POINT)].itertuples(index=False, name=None))


def _grid_tasks(grid: pd.DataFrame) -> list[str]:
    """The tasks grid.csv scored every point on (its ``val_TASK_auc`` and ``val_TASK_sensitivity`` columns)."""
    scored = [column[4:-4] for column in grid if column.startswith("val_") and column.endswith("_auc")]
    return [task for task in scored if f"val_{task}_sensitivity" in grid]


def _check_losses(name: str, point: pd.Series, rows: pd.DataFrame) -> list[str]:
    """grid.csv's validation loss of the selected point (and its spread) is that of its heads on the leaderboard:
    the mean (and population sd) of their best_val_loss, which the selection and early stopping used."""
    if "best_val_loss" not in rows:
        return []
    losses = rows.drop_duplicates("head_id")["best_val_loss"].to_numpy()
    problems = []
    for column, value in (("val_loss", float(np.mean(losses))), ("val_loss_std", float(np.std(losses)))):
        want = point.get(column, math.nan)
        # The same numbers averaged in another order: equal to the last bits.
        if not math.isnan(want) and not abs(value - want) <= 1e-12 * max(1.0, abs(want)):
            problems.append(f"grid.csv {column} of {name}'s selected point: {want}, from its heads' best_val_loss on "
                            f"the leaderboard {value}")  # fmt: skip
    return problems


def _check_winner(name: str, tied: pd.DataFrame, board: pd.DataFrame, predictions: pd.DataFrame,
                  tasks: list[str]) -> list[str]:  # fmt: skip
    """The selected point of model ``name`` has every trained seed on the leaderboard with a row for each of
    ``tasks``, and its test predictions."""
    point = ", ".join(f"{column} {tied.iloc[0][column]:g}" if isinstance(tied.iloc[0][column], float)
                      else f"{column} {tied.iloc[0][column]}" for column in POINT)  # fmt: skip
    rows = board[board["backbone"] == name]
    if rows.empty:
        tested = ((predictions["backbone"] == name) & (predictions["split"] == "test")).any()
        lacking = [] if tested else [f"predictions.csv has no test rows of {name}, whose point grid.csv selects"]
        return [f"leaderboard.csv has no row of {name}, whose point grid.csv selects ({point})", *lacking]
    held = _points(rows)
    if len(held) != 1 or not held <= _points(tied):
        return [f"leaderboard.csv's {name} rows are not at the point grid.csv selects ({point})"]
    chosen = [key in held for key in tied[list(POINT)].itertuples(index=False, name=None)]
    seeds = int(tied.loc[chosen, "seeds"].iloc[0])
    heads = rows["head_id"].nunique()
    if heads != seeds:
        return [f"leaderboard.csv holds {heads} head(s) of {name}, but grid.csv records {seeds} trained seed(s) of its "
                f"selected point ({point})"]  # fmt: skip
    lacking = [_lacks("internal", head, task) for head, head_rows in rows.groupby("head_id", sort=False)
               for task in tasks if task not in set(head_rows["task"])]  # fmt: skip
    return lacking + _check_losses(name, tied[chosen].iloc[0], rows)


# grid.csv's columns beside the val_TASK_METRIC ones: any other is a damaged header.
GRID_COLUMNS = (*GRID_KEY, "seeds", "failed", "errors", "val_loss", "val_loss_std", "val_multiclass_accuracy",
                "val_macro_auc", "selection_score")  # fmt: skip
GRID_METRICS = ("auc", "sensitivity", "specificity")


def _check_grid_columns(grid: pd.DataFrame, tasks: set[str], path: Path) -> None:
    """``VerifyError`` naming a grid.csv column no run writes: not one of ``GRID_COLUMNS``, nor a ``GRID_METRICS``
    column of a task of the leaderboard or of one grid.csv holds all three of."""
    complete = {task for task in _grid_tasks(grid) if f"val_{task}_specificity" in grid}
    for column in grid:
        task, _, metric = column.removeprefix("val_").rpartition("_")
        if column not in GRID_COLUMNS and not (column.startswith("val_") and metric in GRID_METRICS
                                               and task in tasks | complete):  # fmt: skip
            raise VerifyError(f"{path} has a column {column!r} no run writes: a damaged header?")


def _check_failed(grid: pd.DataFrame, run: RunInfo | None) -> list[str]:
    """grid.csv's failed seeds add up to run.json's count of failed grid points (where both are written)."""
    recorded = run.grid_points_failed if run else None
    if "failed" not in grid or not isinstance(recorded, int) or grid["failed"].isna().any():
        return []
    total = int(grid["failed"].sum())
    return [] if total == recorded else [f"{GRID_CSV} counts {total} failed seed(s), {RUN_JSON} {recorded}"]


def check_selection(grid: pd.DataFrame, board: pd.DataFrame, predictions: pd.DataFrame, run: RunInfo | None,
                    path: Path) -> list[str]:  # fmt: skip
    """The run's selection as grid.csv (``path``) records it: each selection score is the validation number the run
    selected by, and each model's highest-scored point has all its heads on the leaderboard (its internal rows, one
    per task) and in predictions.csv, and no other point has. Fine-tuned heads and the ensemble come from no grid
    point: their rows are checked as rows. ``VerifyError`` for a column no run writes."""
    missing = [column for column in POINT if column not in board]
    if missing:
        raise VerifyError(f"{path.parent / LEADERBOARD_CSV} lacks the column(s) {', '.join(missing)}, which say "
                          "the grid point of each head")  # fmt: skip
    internal = _eval_rows(board, "internal")
    tasks = list(dict.fromkeys(internal["task"]))
    _check_grid_columns(grid, set(tasks), path)
    if "selection_score" not in grid:
        return _check_failed(grid, run)  # a grid.csv from before selection scores were written
    # Every single-label task scores every test image, so each selected head has a row for each task grid.csv
    # scored; a finding with no known test value has no row (multi-label), so there the leaderboard's tasks count.
    tasks += [] if "macro_auc" in board else [task for task in _grid_tasks(grid) if task not in tasks]
    problems = _check_failed(grid, run) + _check_scores(grid, _select_by(run, board), set(tasks))
    winners = grid_winners(grid)
    for name, tied in winners.items():
        problems += _check_winner(name, tied, internal, predictions, tasks)
    models = {_model(backbone, kind) for backbone, kind in zip(grid["backbone"], grid["kind"], strict=True)}
    problems += [f"leaderboard.csv has heads of {name}, but grid.csv records no trained point of it"
                 for name in dict.fromkeys(internal["backbone"]) if name in models and name not in winners]  # fmt: skip
    return problems


# ---- cross-validation: cv_summary.csv from cv_folds.csv

CV_FOLD_COLUMNS = ("repeat", "fold", "backbone", "task", "auc", "test_auc")
CV_SUMMARY_COLUMNS = ("task", "backbone", "n_folds", "mean", "sd", "ci_low", "ci_high", "mean_rank", "test_auc",
                      "test_auc_sd")  # fmt: skip


def _mean_ranks(folds: pd.DataFrame) -> pd.Series:
    """One task's mean rank per model over the folds scored for every model (1 = best AUC, ties averaged)."""
    matrix = folds.groupby(["repeat", "fold", "backbone"])["auc"].mean().unstack("backbone")
    matrix = matrix.dropna(axis=1, how="all").dropna()
    if matrix.empty:
        return pd.Series(math.nan, index=matrix.columns)
    return pd.Series(rankdata(-matrix.to_numpy(), axis=1).mean(axis=0), index=matrix.columns)


def crossval_summary(folds: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per task and model: fold count, mean, sd, the Nadeau-Bengio corrected interval (``k`` folds; NaN when
    ``k`` is unknown), mean rank, and the test AUC's mean and sd, from the per-fold rows."""
    groups = folds.groupby(["task", "backbone"], sort=False)
    out = pd.DataFrame({"n_folds": groups["auc"].count(), "mean": groups["auc"].mean(),
                        "sd": groups["auc"].std(ddof=1), "test_auc": groups["test_auc"].mean(),
                        "test_auc_sd": groups["test_auc"].std(ddof=1)})  # fmt: skip
    n = out["n_folds"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = student_t.ppf(0.975, n - 1) * out["sd"] * np.sqrt(1 / n + 1 / (k - 1)) if k >= 2 else math.nan
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    ranks = {(task, name): rank for task, one in folds.groupby("task") for name, rank in _mean_ranks(one).items()}
    out["mean_rank"] = [ranks.get(key, math.nan) for key in out.index]
    return out


def check_crossval(results_dir: Path, board: pd.DataFrame) -> list[str]:
    """cv_summary.csv's numbers recomputed from cv_folds.csv (nothing to check without cv_folds.csv)."""
    path = RunFolder(results_dir).file(CV_FOLDS_CSV)
    if not path.is_file():
        return []
    folds = as_numbers(read_table(path, CV_FOLD_COLUMNS, dtype={"task": str, "backbone": str}), path,
                        ("auc", "test_auc"), missing_ok=True)  # fmt: skip
    summary_path = RunFolder(results_dir).file(CV_SUMMARY_CSV)
    summary = read_table(summary_path, CV_SUMMARY_COLUMNS, dtype={"task": str, "backbone": str})
    summary = as_numbers(summary, summary_path, CV_SUMMARY_COLUMNS[2:], missing_ok=True)
    k = board["config_cv"].iloc[0] if "config_cv" in board and len(board) else 0
    k = int(k) if math.isfinite(k) else 0
    expected = crossval_summary(folds, k)
    recorded = summary.set_index(["task", "backbone"])
    problems = [f"cv_summary.csv lacks {task} {name}" for task, name in expected.index
                if (task, name) not in recorded.index]  # fmt: skip
    problems += [f"cv_summary.csv has {task} {name}, which cv_folds.csv lacks" for task, name in recorded.index
                 if (task, name) not in expected.index]  # fmt: skip
    columns = [c for c in expected.columns if k >= 2 or c not in ("ci_low", "ci_high")]
    for key in expected.index.intersection(recorded.index):
        for column in columns:
            got, want = float(recorded.loc[key, column]), float(expected.loc[key, column])
            if not (math.isnan(got) and math.isnan(want)) and not abs(got - want) <= TOLERANCE:
                problems.append(f"cv_summary.csv {key[0]} {key[1]} {column}: {got}, from cv_folds.csv {want}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 when everything matches, 1 listing the differences, 2 when the folder cannot be read."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.evaluation.verify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("results_dir", type=Path, help=f"folder holding {LEADERBOARD_CSV} and {PREDICTIONS_CSV}")
    parser.add_argument("--traceback", action="store_true",
                        help="where a file cannot be used, show the traceback too (for a bug report)")  # fmt: skip
    parser.add_argument("--model-card", type=Path, nargs="+", action="extend", default=[], metavar="PATH",
                        help="also check these model cards (MODEL_CARD.md, or the folder holding it) against the run")
    args = parser.parse_args(argv)
    try:
        problems = verify(args.results_dir)
        if args.model_card:
            # Only here: the card's module reaches Keras (and TensorFlow), which a plain verify never needs.
            from benchmark.evaluation.verify_card import check_model_card

            for card in args.model_card:
                problems += check_model_card(args.results_dir, card)
        rows = len(load_leaderboard_text(RunFolder(args.results_dir).file(LEADERBOARD_CSV)))
    except VerifyError as error:
        if args.traceback:
            raise
        print(f"verify: error: {error}", file=sys.stderr)
        return 2
    if problems:
        print("\n".join(problems))
        print(f"{len(problems)} difference(s) from the recomputation from {PREDICTIONS_CSV} or from the run's record")
        return 1
    _say_checked(RunFolder(args.results_dir), rows)
    for card in args.model_card:
        print(f"{card}: every value of the model card matches the run (and its exports beside it)")
    return 0


def _say_checked(results: RunFolder, rows: int) -> None:
    """What verify found matching, file by file, for a run with no difference."""
    print(f"all {rows} leaderboard rows match scikit-learn recomputed from {PREDICTIONS_CSV}")
    if results.file(REPORT_JSON).is_file():
        print(f"{REPORT_JSON}'s verdict, comparisons (DeLong, McNemar, Holm) and ensemble match their recomputation")
    else:
        print(f"no {REPORT_JSON} (a run from before the verdict was reported): {LEADERBOARD_CSV} checked, nothing else")
    if results.checksums.is_file():  # verify found no file differing from it
        print(f"every file the run wrote still has the bytes {CHECKSUMS} records")
    if results.file(GRID_CSV).is_file():
        print(f"{GRID_CSV}'s selected heads are all on the leaderboard and in {PREDICTIONS_CSV}")
    if results.file(CV_FOLDS_CSV).is_file():
        print(f"{CV_SUMMARY_CSV} matches its recomputation from {CV_FOLDS_CSV}")


if __name__ == "__main__":
    sys.exit(main())
