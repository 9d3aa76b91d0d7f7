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

Not checkable from test predictions, so not checked: the validation columns (val_*, op_val_*,
op_threshold, best_val_loss, best_epoch), which heads the ensemble averages (chosen on validation), the
bootstrap interval bounds (resampled), Newcombe's intervals of paired differences, and the cross-validation's
Friedman and post-hoc tests.
Exits 1 and lists the differences if any number disagrees; 2 with one line when the folder cannot be read.
"""

from __future__ import annotations

import argparse
import json
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

from benchmark.reporting.document import REPORT_VERSION
from features.data.dataset import FINDING_SEPARATOR, UNKNOWN_MARK

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


def verify(results_dir: Path) -> list[str]:
    """Differences between the run's outputs and their recomputation from predictions.csv (empty if none).

    leaderboard.csv always; report.json, comparisons.csv and the ensemble when the run wrote report.json (an
    older run did not); cv_summary.csv when there is a cv_folds.csv. ``VerifyError`` when a file cannot be read.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise VerifyError(f"no results folder {results_dir}")
    board = load_leaderboard(results_dir / "leaderboard.csv")
    predictions = load_predictions(results_dir / "predictions.csv")
    internal = board[board["eval_set"] == "internal"] if "eval_set" in board else board
    # An external test set's leaderboard rows are checked by the tests; its comparisons are checked below.
    problems = check_leaderboard(internal, predictions[predictions["split"] == "test"])
    report = load_report(results_dir / "report.json")
    if report is not None:
        problems += check_report(report, board, predictions, results_dir)
    # One missing head is named once, not once per task and per check.
    return list(dict.fromkeys(problems + check_crossval(results_dir, board)))


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
    positives = positive.split("+")
    y_true = head["label"].isin(positives).to_numpy()
    y_pred = np.isin(classes[head[probability_columns].to_numpy().argmax(axis=1)], positives)
    score = head[[f"p_{name}" for name in positives]].sum(axis=1).to_numpy()
    return y_true, y_pred, score


def _finding_values(head: pd.DataFrame, finding: str) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label: whether each image's value of ``finding`` is known (no ``?`` mark), and whether it is shown."""
    tokens = head["label"].astype(str).str.split(FINDING_SEPARATOR, regex=False)
    known = ~tokens.apply(lambda names: finding + UNKNOWN_MARK in names).to_numpy()
    return known, tokens.apply(lambda names: finding in names).to_numpy()


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


class VerifyError(Exception):
    """A results folder verify cannot read: one line for the user instead of a traceback."""


PREDICTION_COLUMNS = ("backbone", "seed", "head_id", "split", "path", "label")
LEADERBOARD_COLUMNS = ("backbone", "seed", "head_id", "task", "positive", "n_test")
# The leaderboard columns verify reads as numbers: any may be NaN (an undefined ratio), none may be text.
LEADERBOARD_NUMBERS = ("seed", "n_test", "accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "tp",
                       "fn", "fp", "tn", "ece", "multiclass_accuracy", "macro_auc", "op_threshold")  # fmt: skip
REPORT_KEYS = ("leaderboard", "verdict", "ensemble", "comparisons")
# The verdict's name for the mean of its members (benchmark.evaluation.verdict.ENSEMBLE), written out rather than
# imported: verify loads none of the code whose numbers it checks.
ENSEMBLE = "ensemble"


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


def _read_table(path: Path, required: tuple[str, ...], **options) -> pd.DataFrame:
    """``path`` read by pandas; ``VerifyError`` if it is missing, cut short, unreadable or lacks a required column."""
    if not path.is_file():
        raise VerifyError(f"{path.parent} has no {path.name}: not the results folder of a finished run")
    # pandas fills a cut-off last line with NaN rather than failing; every file the run writes ends its last line.
    if path.stat().st_size and not _ends_with_newline(path):
        raise VerifyError(f"{path} ends in the middle of a line: truncated (copy it again, or rerun)")
    try:
        frame = pd.read_csv(path, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        reason = (str(error).strip() or "empty").splitlines()[0]
        raise VerifyError(f"{path} cannot be read as a table: {reason}") from None
    missing = [name for name in required if name not in frame]
    if missing:
        raise VerifyError(f"{path} lacks the column(s) {', '.join(missing)}")
    return frame


def _as_numbers(frame: pd.DataFrame, path: Path, columns, missing_ok: bool) -> pd.DataFrame:
    """``frame`` with ``columns`` (those it has) as floats; ``VerifyError`` naming the first line holding text, or
    an empty cell unless ``missing_ok``."""
    for column in (c for c in columns if c in frame):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = (values.isna() & frame[column].notna()) if missing_ok else values.isna()
        if bad.any():
            position = int(np.flatnonzero(bad.to_numpy())[0])
            raise VerifyError(f"{path} line {position + 2}: {column} is {frame[column].iloc[position]!r}, not a number")
        frame[column] = values.astype(np.float64)
    return frame


def load_leaderboard(path: Path) -> pd.DataFrame:
    """leaderboard.csv with its numbers checked to be numbers; ``VerifyError`` otherwise."""
    # Read as text: a class named "1" is a name, not a number.
    text = {"head_id": str, "task": str, "backbone": str, "positive": str}
    frame = _read_table(path, LEADERBOARD_COLUMNS, dtype=text)
    return _as_numbers(frame, path, LEADERBOARD_NUMBERS, missing_ok=True)


def load_predictions(path: Path) -> pd.DataFrame:
    """predictions.csv with every probability a number; ``VerifyError`` otherwise."""
    text = {"head_id": str, "backbone": str, "split": str, "path": str, "label": str}
    frame = _read_table(path, PREDICTION_COLUMNS, dtype=text)
    probabilities = [column for column in frame if column.startswith("p_")]
    if not probabilities:
        raise VerifyError(f"{path} has no probability column (p_<class>)")
    return _as_numbers(frame, path, [*probabilities, "seed"], missing_ok=False)


def load_report(path: Path) -> dict | None:
    """report.json's ``data``; None when the run wrote none (older than the verdict); ``VerifyError`` if unreadable."""
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise VerifyError(f"{path} is not readable JSON (truncated?): {error}") from None
    if not isinstance(values, dict) or values.get("version") != REPORT_VERSION:
        raise VerifyError(f"{path} is not a report of format {REPORT_VERSION}: written by another cxr-bench version?")
    data = values.get("data")
    missing = [key for key in REPORT_KEYS if not isinstance(data, dict) or key not in data]
    if missing:
        raise VerifyError(f"{path} lacks data.{missing[0]}: written by another cxr-bench version?")
    return data


def _number(value) -> float:
    """A cell or JSON value as a float: NaN for an empty one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    return float(value)


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
        values = [want.get(raw, _number(row.get(raw))) for want, row in zip(expected, rows, strict=True)]
        for want, value in zip(expected, holm(values), strict=True):
            want[adjusted] = float(value)


def _compare(label: str, row: dict, want: dict) -> list[str]:
    """The recorded values of ``row`` that differ from ``want``."""
    out = []
    for column, value in want.items():
        got = _number(row.get(column))
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


def _check_best_and_tied(where: str, verdict: dict, aucs: dict[str, float], rows: list[dict],
                         expected: list[dict]) -> list[str]:  # fmt: skip
    """The best head has the highest AUC; the tied ones are it and those whose pair with it has Holm p >= alpha."""
    top = max(aucs.values())
    best, alpha = verdict.get("best"), float(verdict.get("alpha", math.nan))
    if best not in aucs or aucs[best] < top - 1e-9:
        leaders = ", ".join(name for name, auc in aucs.items() if auc >= top - 1e-9)
        return [f"verdict {where}: best {best!r}, but the highest recomputed AUC ({top:.6f}) is {leaders}'s"]
    apart = {row["b"] if row["a"] == best else row["a"] for row, want in zip(rows, expected, strict=True)
             if best in (row["a"], row["b"]) and want["p_holm"] < alpha}  # fmt: skip
    tied = [name for name in aucs if name not in apart]
    problems = []
    if set(verdict.get("tied", [])) != set(tied):
        problems.append(f"verdict {where}: tied {sorted(verdict.get('tied', []))}, but the recomputed Holm p-values "
                        f"tie {sorted(tied)} with {best} at alpha {alpha:g}")  # fmt: skip
    different = sum(want["p_holm"] < alpha for want in expected)
    for name, value in (("n_pairs", len(expected)), ("n_different", different)):
        if verdict.get(name) != value:
            problems.append(f"verdict {where}: {name} {verdict.get(name)}, recomputed {value}")
    return problems


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
            problems.append(f"verdict {where}: missing from report.json")
            continue
        rows = [row for row in comparisons if row.get("eval_set") == eval_set and row.get("task") == task]
        problems += check_task(where, verdict[task], cases, rows)
    problems += [f"verdict {eval_set} {task}: no such task with both classes among the leaderboard's {eval_set} rows"
                 for task in verdict if task not in checked]  # fmt: skip
    return problems


# ---- report.json against the files, and the ensemble


def _same_rows(eval_set: str, listed: list[dict], board: pd.DataFrame) -> list[str]:
    """report.json's leaderboard rows of ``eval_set`` are leaderboard.csv's, with the same numbers."""
    on_file = {(row["head_id"], row["task"]): row for row in board.to_dict("records")}
    in_report = {(row.get("head_id"), row.get("task")): row for row in listed}
    problems = [f"leaderboard.csv lacks the {eval_set} row of {head} on {task} that report.json lists"
                for head, task in in_report if (head, task) not in on_file]  # fmt: skip
    problems += [f"leaderboard.csv has an {eval_set} row of {head} on {task} that report.json does not list"
                 for head, task in on_file if (head, task) not in in_report]  # fmt: skip
    numeric = {column for column in board if pd.api.types.is_numeric_dtype(board[column])}
    for key in in_report.keys() & on_file.keys():
        for column, value in in_report[key].items():
            if column in numeric and isinstance(value, int | float) and not isinstance(value, bool):
                got = _number(on_file[key][column])
                if not _same_number(got, float(value)):
                    problems.append(f"leaderboard.csv {key[0]} {key[1]} {column}: {got}, report.json {value}")
    return problems


def check_rows(data: dict, board: pd.DataFrame, predictions: pd.DataFrame) -> list[str]:
    """Every head row report.json lists is in leaderboard.csv (and back), and has its predictions."""
    problems = []
    for eval_set, key in (("internal", "leaderboard"), ("external", "external_leaderboard")):
        listed = data.get(key) or []
        problems += _same_rows(eval_set, listed, _eval_rows(board, eval_set))
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
    frame = _read_table(path, tuple(text), dtype=text)
    columns = list(rows[0]) if rows else list(frame.columns)
    if len(frame) != len(rows) or list(frame.columns) != columns:
        return [f"{path.name} has {len(frame)} rows of {len(frame.columns)} columns, report.json's comparisons "
                f"{len(rows)} of {len(columns)}"]  # fmt: skip
    frame = _as_numbers(frame, path, [c for c in columns if c not in text], missing_ok=True)
    problems = []
    for line, (on_file, row) in enumerate(zip(frame.to_dict("records"), rows, strict=True), start=2):
        for column in columns:
            got, want = on_file[column], row.get(column)
            same = got == want if column in text else _same_number(got, _number(want))
            if not same:
                pair = f"{row['eval_set']} {row['task']} {row['a']} vs {row['b']}"
                problems.append(f"{path.name} line {line} ({pair}) {column}: {got}, report.json {want}")
    return problems


def check_ensemble(ensemble: dict, predictions: pd.DataFrame) -> list[str]:
    """The ensemble's probabilities are the mean of its members' (first seeds), on every split it was scored on."""
    members = list(ensemble.get("members") or [])
    rows = predictions[predictions["backbone"] == ENSEMBLE]
    if len(members) < 2:
        return [] if rows.empty else ["predictions.csv has ensemble rows, but report.json names no ensemble"]
    firsts = first_seed_heads(predictions)
    missing = [name for name in members if name not in firsts]
    if missing:
        return [f"ensemble: predictions.csv has no rows of its member(s) {', '.join(missing)}"]
    problems = []
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


def check_report(data: dict, board: pd.DataFrame, predictions: pd.DataFrame, results_dir: Path) -> list[str]:
    """report.json against leaderboard.csv, comparisons.csv and the recomputed verdict and ensemble."""
    problems = check_rows(data, board, predictions)
    problems += check_comparisons_file(data["comparisons"], results_dir / "comparisons.csv")
    problems += check_verdict("internal", data["verdict"], data["comparisons"], board, predictions)
    # A grouped external set gets no verdict, so one is only checked where the run wrote it.
    if data.get("external_verdict"):
        problems += check_verdict("external", data["external_verdict"], data["comparisons"], board, predictions)
    return problems + check_ensemble(data["ensemble"], predictions)


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
    path = results_dir / "cv_folds.csv"
    if not path.is_file():
        return []
    folds = _as_numbers(_read_table(path, CV_FOLD_COLUMNS, dtype={"task": str, "backbone": str}), path,
                        ("auc", "test_auc"), missing_ok=True)  # fmt: skip
    summary_path = results_dir / "cv_summary.csv"
    summary = _read_table(summary_path, CV_SUMMARY_COLUMNS, dtype={"task": str, "backbone": str})
    summary = _as_numbers(summary, summary_path, CV_SUMMARY_COLUMNS[2:], missing_ok=True)
    k = int(board["config_cv"].iloc[0]) if "config_cv" in board and len(board) else 0
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
    parser.add_argument("results_dir", type=Path, help="folder holding leaderboard.csv and predictions.csv")
    args = parser.parse_args(argv)
    try:
        problems = verify(args.results_dir)
        rows = len(load_leaderboard(args.results_dir / "leaderboard.csv"))
    except VerifyError as error:
        print(f"verify: error: {error}", file=sys.stderr)
        return 2
    if problems:
        print("\n".join(problems))
        print(f"{len(problems)} numbers differ from their recomputation from predictions.csv")
        return 1
    print(f"all {rows} leaderboard rows match scikit-learn recomputed from predictions.csv")
    if (args.results_dir / "report.json").is_file():
        print("report.json's verdict, comparisons (DeLong, McNemar, Holm) and ensemble match their recomputation")
    else:
        print("no report.json (a run from before the verdict was reported): leaderboard.csv checked, nothing else")
    if (args.results_dir / "cv_folds.csv").is_file():
        print("cv_summary.csv matches its recomputation from cv_folds.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
