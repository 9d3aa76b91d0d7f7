"""Clinical metrics, their bootstrap intervals and calibration, as pure functions of labels and probabilities.

A binary task groups the classes into positive and negative (for
``normal_vs_pneumonia`` the positive group is bacterial + viral). Its decision
is the multi-class argmax mapped onto the groups, as in the reference study;
its score, for ROC AUC, is the summed probability of the positive group.

Multi-label (several findings per image, labels an ``(n, findings)`` array of
1, 0 and NaN for unknown, one sigmoid per finding): each finding is a binary
task, finding vs not, scored by its own probability, decided at 0.5, on the
images whose value of that finding is known.
"""

from __future__ import annotations

import math
import re

import numpy as np

KERMANY_TASKS: dict[str, tuple[str, ...]] = {
    "normal_vs_pneumonia": ("bacterial", "viral"),
    "bacterial_vs_rest": ("bacterial",),
    "viral_vs_rest": ("viral",),
}
METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc")


def finding_task(finding: str) -> str:
    """The task name of a finding: ``Pleural Effusion`` -> ``pleural_effusion``."""
    return re.sub(r"[^0-9a-z]+", "_", finding.lower()).strip("_") or "finding"


def binary_tasks(classes: tuple[str, ...], multi_label: bool = False) -> dict[str, tuple[str, ...]]:
    """Task name -> positive classes.

    The Kermany tasks for normal / bacterial / viral; ``normal_vs_X`` for two
    classes one of which is normal; else one-vs-rest per class. A normal class
    among three or more is the rest of a ``normal_vs_disease`` task whose
    positive group is every other class: disease is always the positive side.
    Multi-label: one task per finding (``finding_task``), the finding its positive side.
    """
    if multi_label:
        tasks = {finding_task(name): (name,) for name in classes}
        if len(tasks) < len(classes):
            raise ValueError(f"findings {', '.join(classes)} give clashing task names; rename one of them")
        return tasks
    if set(classes) == {"normal", "bacterial", "viral"}:
        return dict(KERMANY_TASKS)
    lowered = [name.lower() for name in classes]
    if "normal" not in lowered:
        return {f"{name}_vs_rest": (name,) for name in classes}
    normal = classes[lowered.index("normal")]
    diseases = tuple(name for name in classes if name != normal)
    if len(diseases) == 1:
        return {f"normal_vs_{diseases[0].lower()}": diseases}
    return {"normal_vs_disease": diseases} | {f"{name}_vs_rest": (name,) for name in diseases}


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
    return binary_metrics(*task_decision(labels, probabilities, classes, positives))


def task_decision(
    labels: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...], positives: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean truth, decision and positive-group score of one task: argmax, or a finding's score at 0.5."""
    y_true, score = task_truth_and_score(labels, probabilities, classes, positives)
    if np.ndim(labels) == 2:
        return y_true, score >= 0.5, score
    positive_index = [classes.index(name) for name in positives]
    return y_true, np.isin(np.argmax(probabilities, axis=1), positive_index), score


def multiclass_confusion(labels: np.ndarray, probabilities: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` counts: row = true class, column = argmax class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.argmax(probabilities, axis=1)), 1)
    return matrix


def multiclass_accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Share of images whose argmax class is the true class; multi-label: of known findings decided right at 0.5."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        known = ~np.isnan(labels)
        return float(np.mean((probabilities[known] >= 0.5) == (labels[known] == 1))) if known.any() else math.nan
    return float(np.mean(np.argmax(probabilities, axis=1) == labels)) if len(labels) else math.nan


def macro_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Multi-label: the mean over findings of each finding's ROC AUC (findings whose AUC is undefined left out)."""
    aucs = [roc_auc(*_finding_truth_and_score(labels, probabilities, j)) for j in range(np.shape(labels)[1])]
    defined = [auc for auc in aucs if not math.isnan(auc)]
    return float(np.mean(defined)) if defined else math.nan


def _finding_truth_and_score(labels: np.ndarray, probabilities: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Finding ``j``'s truth and probability on the images whose value of it is known."""
    known = ~np.isnan(labels[:, j])
    return labels[known, j] == 1, probabilities[known, j].astype(np.float64)


def evaluate(labels: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Metrics of every binary task of ``classes``: ``{task: metrics}`` (multi-label from 2-D ``labels``)."""
    return {
        task: task_metrics(labels, probabilities, classes, positives)
        for task, positives in binary_tasks(classes, np.ndim(labels) == 2).items()
    }


def task_truth_and_score(
    labels: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...], positives: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean disease truth and the summed positive-group probability of one task (multi-label: see module)."""
    if np.ndim(labels) == 2:
        return _finding_truth_and_score(labels, probabilities, classes.index(positives[0]))
    positive_index = [classes.index(name) for name in positives]
    # Summed in float64: float32 sums of saturated probabilities tie where the exact values do not.
    return np.isin(labels, positive_index), probabilities[:, positive_index].astype(np.float64).sum(axis=1)


def threshold_for_sensitivity(y_true: np.ndarray, score: np.ndarray, target: float) -> float:
    """The highest threshold ``t`` at which ``score >= t`` reaches ``target`` sensitivity on these cases.

    Chosen on validation, then applied unchanged to test. NaN without positive cases.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], not {target}")
    positives = np.sort(np.asarray(score, dtype=np.float64)[np.asarray(y_true, dtype=bool)])[::-1]
    if len(positives) == 0:
        return math.nan
    # The k-th highest positive score lets k positives through; ties only let more through.
    needed = math.ceil(target * len(positives) - 1e-9)
    return float(positives[needed - 1])


def operating_point(
    val_truth: np.ndarray, val_score: np.ndarray, test_truth: np.ndarray, test_score: np.ndarray, target: float
) -> dict[str, float]:
    """The validation threshold for ``target`` sensitivity and what it gives on validation and test."""
    threshold = threshold_for_sensitivity(val_truth, val_score, target)
    val = binary_metrics(val_truth, np.asarray(val_score) >= threshold, val_score)
    test = binary_metrics(test_truth, np.asarray(test_score) >= threshold, test_score)
    return {
        "target_sensitivity": target,
        "threshold": threshold,
        "val_sensitivity": val["sensitivity"],
        "val_specificity": val["specificity"],
        **{f"test_{name}": test[name] for name in ("sensitivity", "specificity", "precision", "tp", "fn", "fp", "tn")},
    }


def _rank_auc(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``scores`` (same truth per row, which may itself be 2-D)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=-1)  # ties get their average rank, so they count one half
    n_pos = y_true.sum(axis=-1)
    n_neg = y_true.shape[-1] - n_pos
    u_statistic = (ranks * y_true).sum(axis=-1) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u_statistic / (n_pos * n_neg), np.nan)


def _resample_indices(n_cases: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, n_cases)`` case indices drawn with replacement, all at once so every metric is vectorised."""
    return np.random.default_rng(seed).integers(0, n_cases, size=(resamples, n_cases))


def _percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Central ``level`` percentile interval of the finite ``samples`` (NaN, NaN when none is finite)."""
    samples = samples[np.isfinite(samples)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail]) if len(samples) else (math.nan, math.nan)
    return float(low), float(high)


def bootstrap_intervals(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    score: np.ndarray,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence interval of every metric in ``METRICS``.

    The test images are resampled with replacement ``resamples`` times; a
    resample where a metric is undefined (no positive case, say) is left out of
    that metric's interval.

    Not ``scipy.stats.bootstrap``: with ``paired=True, method="percentile"`` and
    ``rng=np.random.default_rng(seed)`` it draws these same resamples and gives the
    same intervals when every resample is defined, at the same speed, but it takes
    quantiles over all resamples with NaN propagating (SciPy 1.17), so a single
    resample without a positive case makes the whole sensitivity and AUC interval
    NaN (with a DegenerateDataWarning) instead of being left out.
    """
    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    index = _resample_indices(len(y_true), resamples, seed)
    truth, pred = y_true[index], y_pred[index]
    tp = (truth & pred).sum(axis=1).astype(np.float64)
    fn = (truth & ~pred).sum(axis=1).astype(np.float64)
    fp = (~truth & pred).sum(axis=1).astype(np.float64)
    tn = (~truth & ~pred).sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {
            "accuracy": (tp + tn) / (tp + fn + fp + tn),
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "precision": tp / (tp + fp),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "auc": _rank_auc(truth, score[index]),
        }
    return {name: _percentile_interval(samples, level) for name, samples in values.items()}


def reliability_bins(y_true: np.ndarray, score: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Equal-width bins of predicted probability: ``count``, mean ``confidence`` and observed ``frequency``.

    Empty bins have NaN confidence and frequency.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    score = np.clip(np.asarray(score, dtype=np.float64), 0.0, 1.0)
    # Bins are (lo, hi], the first one [0, 0.1]: a probability of exactly 1 lands in the last bin.
    which = np.clip(np.ceil(score * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, weights=score, minlength=n_bins) / count
        frequency = np.bincount(which, weights=y_true, minlength=n_bins) / count
    return {"count": count, "confidence": confidence, "frequency": frequency, "edges": np.linspace(0, 1, n_bins + 1)}


def expected_calibration_error(y_true: np.ndarray, score: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the count-weighted mean gap between predicted probability and observed frequency per bin."""
    bins = reliability_bins(y_true, score, n_bins)
    filled = bins["count"] > 0
    if not filled.any():
        return math.nan
    gaps = np.abs(bins["confidence"][filled] - bins["frequency"][filled])
    return float(np.sum(bins["count"][filled] * gaps) / bins["count"].sum())


def paired_auc_difference(
    y_true: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``AUC(a) - AUC(b)`` on the same cases, with a percentile bootstrap interval from shared resamples.

    Both models are scored on every resample, so the interval reflects the
    difference itself, not two independent intervals that overlap. Resamples
    with one class only are left out; ``scipy.stats.bootstrap(..., paired=True)``
    would return a NaN interval instead (see ``bootstrap_intervals``).
    """
    y_true = np.asarray(y_true, dtype=bool)
    score_a, score_b = (np.asarray(s, dtype=np.float64) for s in (score_a, score_b))
    index = _resample_indices(len(y_true), resamples, seed)
    truth = y_true[index]
    samples = _rank_auc(truth, score_a[index]) - _rank_auc(truth, score_b[index])
    low, high = _percentile_interval(samples, level)
    return roc_auc(y_true, score_a) - roc_auc(y_true, score_b), low, high
