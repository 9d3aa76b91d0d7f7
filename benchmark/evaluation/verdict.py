"""The verdict: which selected heads the test set tells apart, and the ensemble of the heads validation cannot.

Per task, every pair of selected heads (first seeds) is compared on the same
test images (``benchmark.evaluation.comparisons``): DeLong on AUC, McNemar on
sensitivity and specificity at argmax and at the validation-chosen operating
point, Holm within the task. The heads not told apart from the best are
"tied with the best".

The ensemble is chosen on validation only: the best head by the run's
selection rule, and every head the same paired tests on the validation split
cannot tell from it on any task; its probabilities are their mean.
"""

from __future__ import annotations

import math

import numpy as np

from benchmark.evaluation.comparisons import TaskVerdict, compare_task
from benchmark.evaluation.metrics import (
    binary_metrics,
    binary_tasks,
    macro_auc,
    task_decision,
    threshold_for_sensitivity,
)
from benchmark.records import HeadResult
from benchmark.settings import HeadSettings

ENSEMBLE = "ensemble"
ALPHA = 0.05


def first_seeds(winners: list[HeadResult]) -> dict[str, HeadResult]:
    """Each model's head of the lowest seed, in the order the models first appear."""
    firsts: dict[str, HeadResult] = {}
    for winner in sorted(winners, key=lambda w: w.settings.seed):
        firsts.setdefault(winner.backbone, winner)
    return {name: firsts[name] for name in dict.fromkeys(w.backbone for w in winners)}


def _task_inputs(heads: dict[str, HeadResult], labels: np.ndarray, classes: tuple[str, ...], positives: tuple,
                 key: str, val_labels: np.ndarray | None, target: float | None):  # fmt: skip
    """Truth, then per head the score, the decision and (with ``target``) the decision at the validation threshold."""
    truth, scores, decisions, at_threshold = None, {}, {}, {}
    for name, head in heads.items():
        truth, decision, score = task_decision(labels, head.probabilities[key], classes, positives)
        scores[name], decisions[name] = score, decision
        if target is not None:
            val_truth, _, val_score = task_decision(val_labels, head.probabilities["val"], classes, positives)
            at_threshold[name] = score >= threshold_for_sensitivity(val_truth, val_score, target)
    return truth, scores, decisions, at_threshold or None


def verdicts(
    winners: list[HeadResult], labels: np.ndarray, val_labels: np.ndarray, classes: tuple[str, ...],
    multi_label: bool, target_sensitivity: float, key: str = "test", alpha: float = ALPHA,
) -> dict[str, TaskVerdict]:
    """Per task, the paired comparison of every two selected heads (first seeds) on the ``key`` probabilities.

    ``labels`` are the images of ``key`` (test, or external); a task whose images hold one class only is left
    out. Multi-label tasks use the images whose value of the finding is known.
    """
    heads = {name: head for name, head in first_seeds(winners).items() if key in head.probabilities}
    out = {}
    for task, positives in binary_tasks(classes, multi_label).items():
        truth, scores, decisions, at_threshold = _task_inputs(heads, labels, classes, positives, key, val_labels,
                                                              target_sensitivity)  # fmt: skip
        if truth is None or truth.all() or not truth.any():
            continue
        out[task] = compare_task(task, truth, scores, decisions, at_threshold, alpha=alpha)
    return out


def validation_best(heads: dict[str, HeadResult], select_by: str, labels: np.ndarray, classes: tuple[str, ...],
                    multi_label: bool) -> str:  # fmt: skip
    """The head the run's selection rule (``val_loss``, ``macro_auc`` or ``TASK.METRIC``) ranks first on validation."""
    if select_by == "val_loss":
        return min(heads, key=lambda name: heads[name].best_val_loss)
    if select_by == "macro_auc":
        return max(heads, key=lambda name: _finite(macro_auc(labels, heads[name].probabilities["val"])))
    task, metric = select_by.split(".")
    positives = binary_tasks(classes, multi_label)[task]
    return max(heads, key=lambda name: _finite(binary_metrics(
        *task_decision(labels, heads[name].probabilities["val"], classes, positives))[metric]))  # fmt: skip


def _finite(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def ensemble_members(
    winners: list[HeadResult], val_labels: np.ndarray, classes: tuple[str, ...], multi_label: bool, select_by: str,
    alpha: float = ALPHA,
) -> tuple[str, list[str]]:
    """The validation-best head and the heads validation cannot tell from it on any task (it first); validation only.

    Same paired tests as the verdict (DeLong, Holm within each task), on the validation split.
    """
    heads = first_seeds(winners)
    best = validation_best(heads, select_by, val_labels, classes, multi_label)
    members = set(heads)
    for positives in binary_tasks(classes, multi_label).values():
        truth, scores, decisions, _ = _task_inputs(heads, val_labels, classes, positives, "val", None, None)
        if truth is None or truth.all() or not truth.any():
            continue
        members &= set(compare_task("val", truth, scores, decisions, alpha=alpha, best=best).tied)
    return best, [best, *(name for name in heads if name in members and name != best)]


def _log_loss(labels: np.ndarray, probabilities: np.ndarray, multi_label: bool) -> float:
    """Mean cross-entropy of ``probabilities`` (binary per known finding for multi-label), as the heads' val loss."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    if multi_label:
        known = ~np.isnan(labels)
        y = np.where(known, labels, 0)
        losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        return float(losses[known].mean())
    return float(-np.mean(np.log(p[np.arange(len(labels)), np.asarray(labels, dtype=int)])))


def make_ensemble(winners: list[HeadResult], members: list[str], val_labels: np.ndarray,
                  multi_label: bool) -> HeadResult:  # fmt: skip
    """The mean of ``members``' probabilities (first seeds) as one more selected head, named ``ensemble``.

    Its external probabilities exist when every member has them (fine-tuned heads are not scored externally).
    """
    heads = [first_seeds(winners)[name] for name in members]
    splits = set.intersection(*(set(head.probabilities) for head in heads))
    probabilities = {split: np.mean([head.probabilities[split] for head in heads], axis=0).astype(np.float32)
                     for split in sorted(splits)}  # fmt: skip
    return HeadResult(
        backbone=ENSEMBLE, image_size=0, settings=HeadSettings(kind=ENSEMBLE, lr=0.0, dropout=0.0, l2=0.0),
        weights="mean of " + ", ".join(members), head_id="ensemble:" + "+".join(head.head_id for head in heads),
        best_epoch=0, epochs_run=0, best_val_loss=_log_loss(val_labels, probabilities["val"], multi_label),
        history={}, probabilities=probabilities,
    )  # fmt: skip
