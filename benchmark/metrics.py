"""Clinical metrics as pure functions of labels and probabilities.

A binary task groups the classes into positive and negative (for
``normal_vs_pneumonia`` the positive group is bacterial + viral). Its decision
is the multi-class argmax mapped onto the groups, as in the reference study;
its score, for ROC AUC, is the summed probability of the positive group.
"""

from __future__ import annotations

import math

import numpy as np

KERMANY_TASKS: dict[str, tuple[str, ...]] = {
    "normal_vs_pneumonia": ("bacterial", "viral"),
    "bacterial_vs_rest": ("bacterial",),
    "viral_vs_rest": ("viral",),
}
METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc")


def binary_tasks(classes: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Task name -> positive classes.

    The Kermany tasks for normal / bacterial / viral; ``normal_vs_X`` for two
    classes one of which is normal; else one-vs-rest per class.
    """
    if set(classes) == {"normal", "bacterial", "viral"}:
        return dict(KERMANY_TASKS)
    lowered = [name.lower() for name in classes]
    if len(classes) == 2 and "normal" in lowered:
        other = classes[1 - lowered.index("normal")]
        return {f"normal_vs_{other.lower()}": (other,)}
    return {f"{name}_vs_rest": (name,) for name in classes}


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    """``tp, fn, fp, tn`` of boolean truth and decision arrays (True = disease)."""
    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    return {
        "tp": int(np.sum(y_true & y_pred)),
        "fn": int(np.sum(y_true & ~y_pred)),
        "fp": int(np.sum(~y_true & y_pred)),
        "tn": int(np.sum(~y_true & ~y_pred)),
    }


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties half.

    NaN when only one class is present.
    """
    y_true = np.asarray(y_true, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # Mann-Whitney U from average ranks, which counts ties as one half.
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    stops = np.concatenate((boundaries, [len(score)]))
    for start, stop in zip(starts, stops, strict=True):
        ranks[order[start:stop]] = (start + stop + 1) / 2.0
    u_statistic = ranks[y_true].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (n_pos * n_neg))


def binary_metrics(y_true: np.ndarray, y_pred: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, precision, F1, ROC AUC and the four counts.

    A ratio with a zero denominator (say, sensitivity with no diseased case) is NaN.
    """
    counts = confusion_counts(y_true, y_pred)
    tp, fn, fp, tn = counts["tp"], counts["fn"], counts["fp"], counts["tn"]
    return {
        "accuracy": _ratio(tp + tn, tp + fn + fp + tn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auc": roc_auc(y_true, score),
        **counts,
    }


def task_metrics(
    labels: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...], positives: tuple[str, ...]
) -> dict[str, float]:
    """Binary metrics of one task from integer labels and ``(n, n_classes)`` probabilities."""
    positive_index = [classes.index(name) for name in positives]
    y_true = np.isin(labels, positive_index)
    y_pred = np.isin(np.argmax(probabilities, axis=1), positive_index)
    score = probabilities[:, positive_index].sum(axis=1)
    return binary_metrics(y_true, y_pred, score)


def multiclass_confusion(labels: np.ndarray, probabilities: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` counts: row = true class, column = argmax class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.argmax(probabilities, axis=1)), 1)
    return matrix


def multiclass_accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Share of images whose argmax class is the true class."""
    return float(np.mean(np.argmax(probabilities, axis=1) == np.asarray(labels))) if len(labels) else math.nan


def evaluate(labels: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Metrics of every binary task of ``classes``: ``{task: metrics}``."""
    return {
        task: task_metrics(labels, probabilities, classes, positives)
        for task, positives in binary_tasks(classes).items()
    }
