"""Recompute the test numbers of leaderboard.csv from predictions.csv with scikit-learn.

    python -m benchmark.evaluation.verify results/

Checked, per row: accuracy, sensitivity, specificity, precision, f1, auc and the four counts (argmax
decision), the operating point's test sensitivity, specificity, precision and counts, n_test,
multiclass_accuracy, ece (from scikit-learn's calibration_curve), and that every bootstrap interval
holds its value. Multi-label runs (a ``macro_auc`` column): per finding, its probability at 0.5 on the
images whose value of it is known, label accuracy and macro_auc. Not checkable from test predictions,
so not checked: the validation columns (val_*, op_val_*, op_threshold, best_val_loss, best_epoch) and
the interval bounds themselves (resampled).
Exits 1 and lists the differences if any number disagrees.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

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
    """Differences between leaderboard.csv and scikit-learn on predictions.csv (empty if none)."""
    board = pd.read_csv(results_dir / "leaderboard.csv")
    if "eval_set" in board:  # an external test set's rows are checked by the tests, not here
        board = board[board["eval_set"] == "internal"]
    predictions = pd.read_csv(results_dir / "predictions.csv")
    predictions = predictions[predictions["split"] == "test"]
    problems = []
    multi_label = "macro_auc" in board
    for row in board.itertuples():
        head = predictions[predictions["head_id"] == row.head_id]
        probability_columns = [c for c in head.columns if c.startswith("p_")]
        classes = [c[2:] for c in probability_columns]
        if multi_label:
            y_true, y_pred, score = _finding_task(head, row.positive)
            problems += _check_multi_label(row, head, classes)
        else:
            positives = row.positive.split("+")
            y_true = head["label"].isin(positives).to_numpy()
            argmax = np.array(classes)[head[probability_columns].to_numpy().argmax(axis=1)]
            y_pred = np.isin(argmax, positives)
            score = head[[f"p_{name}" for name in positives]].sum(axis=1).to_numpy()
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


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.evaluation.verify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("results_dir", type=Path, help="folder holding leaderboard.csv and predictions.csv")
    args = parser.parse_args(argv)
    problems = verify(args.results_dir)
    board = pd.read_csv(args.results_dir / "leaderboard.csv")
    if problems:
        print("\n".join(problems))
        print(f"{len(problems)} numbers differ from scikit-learn")
        return 1
    print(f"all {len(board)} leaderboard rows match scikit-learn recomputed from predictions.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
