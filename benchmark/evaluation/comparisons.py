"""Paired statistics that tell whether two heads, scored on the same test images, differ.

ROC AUC: DeLong's test on the covariance of the two AUCs (Sun & Xu 2014 midrank algorithm).
Sensitivity and specificity: exact McNemar on the discordant cases, with Newcombe's (1998)
hybrid score interval of the paired difference. Within a task, every family of pairwise
p-values (AUC, sensitivity, specificity) is Holm-corrected on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from benchmark.evaluation.metrics import roc_auc


@dataclass(frozen=True)
class AucComparison:
    """ROC AUC of head A against head B on one task: ``difference = auc_a - auc_b``, DeLong interval and test."""

    auc_a: float
    auc_b: float
    difference: float
    low: float
    high: float
    z: float
    p: float


@dataclass(frozen=True)
class ProportionComparison:
    """A paired difference of two proportions on the same cases (sensitivity on positives, specificity on negatives).

    ``b``: cases A gets right and B wrong; ``c``: A wrong, B right. ``p`` is the exact McNemar test.
    """

    value_a: float
    value_b: float
    difference: float
    low: float
    high: float
    b: int
    c: int
    p: float


def _placements(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs ``(k,)`` and DeLong's placement values: ``V10`` per positive ``(k, m)``, ``V01`` per negative ``(k, n)``.

    ``V10`` is the share of negatives a positive outscores, ``V01`` the share of positives that outscore a
    negative, ties one half; Sun & Xu get both from midranks within each class and over all cases.
    """
    positives, negatives = scores[:, y_true], scores[:, ~y_true]
    m, n = positives.shape[1], negatives.shape[1]
    overall = rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    v10 = (overall[:, :m] - rankdata(positives, axis=1)) / n
    v01 = 1.0 - (overall[:, m:] - rankdata(negatives, axis=1)) / m
    return v10.mean(axis=1), v10, v01


def _as_inputs(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    y_true = np.asarray(y_true, dtype=bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    return y_true, scores, int(y_true.sum()), int((~y_true).sum())


def delong_covariance(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their DeLong covariance (k, k) for k score rows (k, n) on the same cases.

    Sun & Xu (2014) fast algorithm: placement values from midranks, O(k n log n). AUCs are NaN when only
    one class is present; the covariance is NaN unless each class has two cases, since it is built from
    sample variances within each class.
    """
    y_true, scores, m, n = _as_inputs(y_true, scores)
    k = scores.shape[0]
    if m == 0 or n == 0:
        return np.full(k, np.nan), np.full((k, k), np.nan)
    aucs, v10, v01 = _placements(y_true, scores)
    if m < 2 or n < 2:
        return aucs, np.full((k, k), np.nan)
    return aucs, np.atleast_2d(np.cov(v10) / m + np.cov(v01) / n)


def _difference_variance(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> tuple[float, float, float]:
    """AUC(a), AUC(b) and DeLong's variance of their difference, from the placement differences.

    Same value as ``c00 + c11 - 2 c01`` of ``delong_covariance``, but exactly 0 for identical scores.
    """
    y_true, scores, m, n = _as_inputs(y_true, np.stack([score_a, score_b]))
    if m == 0 or n == 0:
        return math.nan, math.nan, math.nan
    aucs, v10, v01 = _placements(y_true, scores)
    if m < 2 or n < 2:
        return float(aucs[0]), float(aucs[1]), math.nan
    variance = np.var(v10[0] - v10[1], ddof=1) / m + np.var(v01[0] - v01[1], ddof=1) / n
    return float(aucs[0]), float(aucs[1]), float(variance)


def _z_and_p(difference: float, variance: float) -> tuple[float, float]:
    """Two-sided normal test of ``difference``; zero variance is p 1 with no difference and p 0 with one."""
    if math.isnan(difference) or math.isnan(variance):
        return math.nan, math.nan
    if variance <= 0:
        return (0.0, 1.0) if difference == 0 else (math.copysign(math.inf, difference), 0.0)
    z = difference / math.sqrt(variance)
    return z, float(2 * norm.sf(abs(z)))


def delong_test(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, level: float = 0.95) -> AucComparison:
    """DeLong's paired test of ``AUC(a) - AUC(b)`` on the same cases, with its ``level`` normal interval.

    NaN throughout when only one class is present; ties in scores count one half (midranks).
    """
    auc_a, auc_b, variance = _difference_variance(y_true, score_a, score_b)
    difference = auc_a - auc_b
    z, p = _z_and_p(difference, variance)
    half = norm.ppf((1 + level) / 2) * math.sqrt(max(variance, 0.0)) if not math.isnan(variance) else math.nan
    return AucComparison(auc_a, auc_b, difference, difference - half, difference + half, z, p)


def _newcombe_phi(both: int, only_a: int, only_b: int, neither: int) -> float:
    """Newcombe's corrected correlation of the paired table: 0 with an empty margin, shrunk by n/2 when positive."""
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    if margins == 0:
        return 0.0
    cross = both * neither - only_a * only_b
    n = both + only_a + only_b + neither
    corrected = cross - n / 2 if cross > n / 2 else (0.0 if cross >= 0 else cross)
    return corrected / math.sqrt(margins)


def newcombe_paired_interval(
    both: int, only_a: int, only_b: int, neither: int, level: float = 0.95
) -> tuple[float, float]:
    """Newcombe (1998, Stat Med 17:2635, method 10) hybrid score interval of ``p_a - p_b`` for paired proportions.

    ``p_a = (both + only_a) / n``, ``p_b = (both + only_b) / n``: each gets its Wilson score interval, and the
    two are combined square-and-add with Newcombe's corrected phi. NaN, NaN without cases.
    """
    n = both + only_a + only_b + neither
    if n == 0:
        return math.nan, math.nan
    p_a, p_b = (both + only_a) / n, (both + only_b) / n
    low_a, high_a = proportion_confint(both + only_a, n, alpha=1 - level, method="wilson")
    low_b, high_b = proportion_confint(both + only_b, n, alpha=1 - level, method="wilson")
    phi = _newcombe_phi(both, only_a, only_b, neither)
    down_a, up_b = p_a - low_a, high_b - p_b
    up_a, down_b = high_a - p_a, p_b - low_b
    lower = math.sqrt(max(down_a**2 - 2 * phi * down_a * up_b + up_b**2, 0.0))
    upper = math.sqrt(max(up_a**2 - 2 * phi * up_a * down_b + down_b**2, 0.0))
    return p_a - p_b - lower, p_a - p_b + upper


def paired_proportions(
    truth_mask: np.ndarray, correct_a: np.ndarray, correct_b: np.ndarray, level: float = 0.95
) -> ProportionComparison:
    """Paired comparison of the share of ``truth_mask`` cases each head gets right (``correct_*``: decision == truth).

    Interval: Newcombe (1998) method 10, the hybrid score interval for paired proportions
    (``newcombe_paired_interval``). Test: exact McNemar on the discordant cases, p 1 when there are none
    and NaN when ``truth_mask`` selects no case.
    """
    mask = np.asarray(truth_mask, dtype=bool)
    a, b = np.asarray(correct_a, dtype=bool)[mask], np.asarray(correct_b, dtype=bool)[mask]
    both, only_a, only_b = int(np.sum(a & b)), int(np.sum(a & ~b)), int(np.sum(~a & b))
    neither = len(a) - both - only_a - only_b
    low, high = newcombe_paired_interval(both, only_a, only_b, neither, level)
    if len(a) == 0:
        return ProportionComparison(math.nan, math.nan, math.nan, low, high, 0, 0, math.nan)
    p = 1.0 if only_a + only_b == 0 else float(mcnemar([[both, only_a], [only_b, neither]], exact=True).pvalue)
    value_a, value_b = float(a.mean()), float(b.mean())
    return ProportionComparison(value_a, value_b, (only_a - only_b) / len(a), low, high, only_a, only_b, p)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values, equal to statsmodels' ``multipletests(method="holm")[1]`` (a test checks it);
    NaN p-values stay NaN and are not counted.

    Written out rather than called: statsmodels' Holm runs a full ``gc.collect()`` on every call, about 0.5 s
    once TensorFlow is loaded, and a report makes dozens of calls.
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p_values.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p_values))
    order = finite[np.argsort(p_values[finite], kind="mergesort")]
    # Step-down: the k-th smallest of n p-values times (n - k + 1), made monotone, capped at 1.
    stepped = np.maximum.accumulate(p_values[order] * np.arange(len(order), 0, -1))
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


@dataclass(frozen=True)
class PairRow:
    """Head ``a`` against head ``b`` on one task: AUC, and sensitivity / specificity at argmax and operating point.

    ``op_*_p_holm`` (NaN without an operating point) were added to the agreed fields, defaulted so they are optional.
    """

    task: str
    a: str
    b: str
    auc: AucComparison
    p_holm: float
    sensitivity: ProportionComparison
    specificity: ProportionComparison
    op_sensitivity: ProportionComparison | None
    op_specificity: ProportionComparison | None
    sensitivity_p_holm: float
    specificity_p_holm: float
    op_sensitivity_p_holm: float = math.nan
    op_specificity_p_holm: float = math.nan

    def to_row(self) -> dict:
        """A flat dict, one line of ``comparisons.csv``; the ``op_`` columns are NaN without an operating point."""
        auc = self.auc
        return {
            "task": self.task,
            "a": self.a,
            "b": self.b,
            "auc_a": auc.auc_a,
            "auc_b": auc.auc_b,
            "delta_auc": auc.difference,
            "delta_auc_low": auc.low,
            "delta_auc_high": auc.high,
            "z": auc.z,
            "p": auc.p,
            "p_holm": self.p_holm,
            **_proportion_columns("sensitivity", self.sensitivity, self.sensitivity_p_holm),
            **_proportion_columns("specificity", self.specificity, self.specificity_p_holm),
            **_proportion_columns("op_sensitivity", self.op_sensitivity, self.op_sensitivity_p_holm),
            **_proportion_columns("op_specificity", self.op_specificity, self.op_specificity_p_holm),
        }


def _proportion_columns(name: str, comparison: ProportionComparison | None, p_holm: float) -> dict[str, float]:
    """``delta_<name>`` (+ ``_low``/``_high``), ``<name>_mcnemar_p``, ``<name>_p_holm``; ``op_`` leads the delta."""
    prefix, metric = ("op_", name[3:]) if name.startswith("op_") else ("", name)
    values = (math.nan,) * 4
    if comparison is not None:
        values = (comparison.difference, comparison.low, comparison.high, comparison.p)
    return {
        f"{prefix}delta_{metric}": values[0],
        f"{prefix}delta_{metric}_low": values[1],
        f"{prefix}delta_{metric}_high": values[2],
        f"{name}_mcnemar_p": values[3],
        f"{name}_p_holm": p_holm if comparison is not None else math.nan,
    }


@dataclass(frozen=True)
class TaskVerdict:
    """Which heads the test set tells apart on one task.

    ``tied``: the heads not told apart from ``best`` after Holm (best included, input order); a NaN p-value
    tells nothing apart. ``n_different``: pairs whose AUC ``p_holm < alpha``.
    """

    task: str
    best: str
    tied: tuple[str, ...]
    pairs: tuple[PairRow, ...]
    n_pairs: int
    n_different: int
    alpha: float

    def sentence(self) -> str:
        """One sentence for the report: "The test set tells apart 1 of 28 pairs of heads (...); 8 of 8 heads ..."."""
        if self.n_pairs == 0:
            return f"Only one head ({self.best}): there is no pair to tell apart."
        n_heads = len(dict.fromkeys(name for row in self.pairs for name in (row.a, row.b)))
        pairs = "pair" if self.n_pairs == 1 else "pairs"
        verb = "is" if len(self.tied) == 1 else "are"
        return (
            f"The test set tells apart {self.n_different} of {self.n_pairs} {pairs} of heads "
            f"(DeLong, Holm-corrected, α {self.alpha:g}); {len(self.tied)} of {n_heads} heads {verb} "
            f"indistinguishable from the best ({self.best})."
        )


def _best_head(aucs: dict[str, float]) -> str:
    """The head with the highest AUC, the first on ties; the first head when no AUC is defined."""
    values = np.array(list(aucs.values()), dtype=np.float64)
    names = list(aucs)
    return names[0] if np.isnan(values).all() else names[int(np.nanargmax(values))]


def _proportion_pair(truth: np.ndarray, decisions: dict[str, np.ndarray] | None, a: str, b: str):
    """Sensitivity and specificity comparisons of ``a`` against ``b`` at ``decisions``; (None, None) without them."""
    if decisions is None:
        return None, None
    correct_a = np.asarray(decisions[a], dtype=bool) == truth
    correct_b = np.asarray(decisions[b], dtype=bool) == truth
    return paired_proportions(truth, correct_a, correct_b), paired_proportions(~truth, correct_a, correct_b)


def _holm_of(comparisons: list[ProportionComparison | None]) -> np.ndarray:
    return holm([math.nan if c is None else c.p for c in comparisons])


def _pair_rows(
    task: str,
    truth: np.ndarray,
    pairs: list[tuple[str, str]],
    scores: dict[str, np.ndarray],
    decisions: dict[str, np.ndarray],
    op_decisions: dict[str, np.ndarray] | None,
) -> tuple[PairRow, ...]:
    """One row per pair; each family of p-values (AUC, and each proportion) Holm-corrected over the pairs."""
    aucs = [delong_test(truth, scores[a], scores[b]) for a, b in pairs]
    # Per pair: sensitivity, specificity, op_sensitivity, op_specificity, the order of PairRow's fields.
    proportions = [
        (*_proportion_pair(truth, decisions, a, b), *_proportion_pair(truth, op_decisions, a, b)) for a, b in pairs
    ]
    auc_holm = holm([c.p for c in aucs])
    proportion_holm = [_holm_of([row[i] for row in proportions]) for i in range(4)]
    return tuple(
        PairRow(task, a, b, aucs[j], float(auc_holm[j]), *proportions[j], *(float(h[j]) for h in proportion_holm))
        for j, (a, b) in enumerate(pairs)
    )


def compare_task(
    task: str,
    truth: np.ndarray,
    scores: dict[str, np.ndarray],
    decisions: dict[str, np.ndarray],
    op_decisions: dict[str, np.ndarray] | None = None,
    alpha: float = 0.05,
    best: str | None = None,
) -> TaskVerdict:
    """Every unordered pair of heads (``a`` before ``b`` in dict order) on one task, Holm-corrected within the task.

    AUC by DeLong on ``scores``; sensitivity and specificity by McNemar and Newcombe's interval at
    ``decisions`` (argmax) and, when given, ``op_decisions`` (the validation-chosen threshold).
    ``best``: the highest AUC unless given.
    """
    truth = np.asarray(truth, dtype=bool)
    names = list(scores)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    rows = _pair_rows(task, truth, pairs, scores, decisions, op_decisions)
    if best is None:
        best = _best_head({name: roc_auc(truth, scores[name]) for name in names})
    apart = {row.b if row.a == best else row.a for row in rows if best in (row.a, row.b) and row.p_holm < alpha}
    return TaskVerdict(
        task=task,
        best=best,
        tied=tuple(name for name in names if name not in apart),
        pairs=rows,
        n_pairs=len(rows),
        n_different=sum(bool(row.p_holm < alpha) for row in rows),
        alpha=alpha,
    )
