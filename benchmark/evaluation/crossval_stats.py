"""Summaries of a cross-validation's per-fold rows, as pure functions: intervals, ranks, Friedman and post-hoc tests.

The unit is a fold (one repeat's one fold): for each task, each model has one
held-out AUC per fold, and the folds are the blocks of a Friedman design
(Demšar 2006). Folds are not independent samples: they share training images,
and the repeats reuse the same images. A plain t interval over the R x K fold
values therefore understates the spread (Nadeau & Bengio 2003; Bouckaert &
Frank 2004); the interval reported here is the **Nadeau-Bengio corrected
resampled t interval**, the one Bouckaert & Frank recommend for repeated
k-fold. The Friedman and post-hoc p-values treat folds as independent blocks
and share the same optimism: read them as a description of the folds, not as
a test on new patients.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scikit_posthocs
from scipy import stats
from statsmodels.stats.multitest import multipletests

from benchmark.records import CrossValResult

ALPHA = 0.05
BLOCK = ["repeat", "fold"]


@dataclass
class TaskComparison:
    """One task's comparison of the models over the folds.

    ``mean_ranks``: rank 1 = best held-out AUC in a fold, ties averaged, mean over the folds every model was scored
    on (``blocks`` of them). ``friedman_p`` is None where the test does not apply (``note`` says why); the post-hoc
    p-value matrices and ``cd`` (Nemenyi's critical difference of mean ranks) are None with fewer than 2 models or
    2 folds.
    """

    task: str
    mean_ranks: pd.Series
    blocks: int
    friedman_statistic: float | None
    friedman_p: float | None
    note: str
    nemenyi: pd.DataFrame | None
    wilcoxon_holm: pd.DataFrame | None
    cd: float | None


@dataclass
class CrossValSummary:
    """What the report shows of a cross-validation: the per-model table and each task's comparison."""

    folds: int
    repeats: int
    seconds: float
    trained: int
    table: pd.DataFrame  # one row per task and model (SUMMARY_COLUMNS)
    comparisons: dict[str, TaskComparison]


SUMMARY_COLUMNS = ("task", "backbone", "n_folds", "mean", "sd", "ci_low", "ci_high", "mean_rank", "test_auc",
                   "test_auc_sd", "friedman_p")  # fmt: skip


def corrected_interval(values, folds: int, level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sd and the Nadeau-Bengio corrected resampled t interval of R x K fold values.

    The variance of the mean is ``sd**2 * (1 / n + n_test / n_train)`` with ``n = R x K`` values and
    ``n_test / n_train = 1 / (K - 1)`` for K folds, instead of the naive ``sd**2 / n`` that would hold for
    independent folds; ``n - 1`` degrees of freedom. NaN values are left out; fewer than 2 give a NaN interval.
    """
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    n = len(values)
    mean = float(np.mean(values)) if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(np.std(values, ddof=1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd * math.sqrt(1 / n + 1 / (folds - 1))
    return mean, sd, mean - half, mean + half


def auc_matrix(rows: pd.DataFrame, task: str) -> pd.DataFrame:
    """One task's held-out AUCs: a row per fold (block), a column per model; folds missing a model are dropped."""
    one = rows[rows["task"] == task]
    return one.pivot_table(index=BLOCK, columns="backbone", values="auc", aggfunc="mean").dropna()


def fold_ranks(matrix: pd.DataFrame) -> pd.DataFrame:
    """Each model's rank within each fold: 1 = best AUC, ties share the average rank."""
    return matrix.rank(axis=1, ascending=False, method="average")


def friedman(matrix: pd.DataFrame) -> tuple[float | None, float | None, str]:
    """Friedman's chi-square over the models (columns) on the folds (rows): statistic, p-value and a note.

    Needs 3 or more models and 2 or more folds (the statistic and p are then None and the note says why).
    Folds where every model ties carry no ranking; if all do, the statistic is 0 and p is 1.
    """
    models, blocks = matrix.shape[1], matrix.shape[0]
    if models < 3:
        return None, None, f"Friedman's test needs at least 3 models; here {models}"
    if blocks < 2:
        return None, None, f"Friedman's test needs at least 2 folds scored for every model; here {blocks}"
    if (matrix.nunique(axis=1) == 1).all():
        return 0.0, 1.0, "every model ties in every fold"
    result = stats.friedmanchisquare(*(matrix[column].to_numpy() for column in matrix.columns))
    return float(result.statistic), float(result.pvalue), ""


def nemenyi(matrix: pd.DataFrame) -> pd.DataFrame:
    """Nemenyi's post-hoc p-values for every pair of models (``scikit_posthocs.posthoc_nemenyi_friedman``)."""
    # The test depends on rank differences only, so its own ascending ranks give the same p-values as ours.
    return scikit_posthocs.posthoc_nemenyi_friedman(matrix.reset_index(drop=True))


def wilcoxon_holm(matrix: pd.DataFrame) -> pd.DataFrame:
    """Pairwise Wilcoxon signed-rank p-values on the folds' AUCs, Holm-adjusted over the pairs (as MedMNIST+).

    A pair whose AUCs are equal in every fold gets p = 1.
    """
    names = list(matrix.columns)
    pairs = list(itertools.combinations(names, 2))
    raw = [_wilcoxon(matrix[a].to_numpy(), matrix[b].to_numpy()) for a, b in pairs]
    adjusted = multipletests(raw, method="holm")[1] if pairs else []
    table = pd.DataFrame(1.0, index=names, columns=names)
    for (a, b), p in zip(pairs, adjusted, strict=True):
        table.loc[a, b] = table.loc[b, a] = float(p)
    return table


def _wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
    if np.allclose(a, b):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few folds: scipy warns that the normal approximation is rough
        return float(stats.wilcoxon(a, b).pvalue)


def critical_difference(models: int, blocks: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of mean ranks: ``q_alpha * sqrt(k (k + 1) / (6 N))`` (Demšar 2006),
    ``q_alpha`` the studentized range quantile over ``sqrt(2)``."""
    q = stats.studentized_range.ppf(1 - alpha, models, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(models * (models + 1) / (6 * blocks)))


def compare(rows: pd.DataFrame, task: str) -> TaskComparison:
    """One task's mean ranks, Friedman test, Nemenyi and Wilcoxon-Holm post-hocs and critical difference."""
    matrix = auc_matrix(rows, task)
    ranks = fold_ranks(matrix).mean().sort_values()
    statistic, p, note = friedman(matrix)
    pairwise = matrix.shape[1] >= 2 and matrix.shape[0] >= 2
    return TaskComparison(
        task=task, mean_ranks=ranks, blocks=matrix.shape[0], friedman_statistic=statistic, friedman_p=p, note=note,
        nemenyi=nemenyi(matrix) if pairwise else None, wilcoxon_holm=wilcoxon_holm(matrix) if pairwise else None,
        cd=critical_difference(matrix.shape[1], matrix.shape[0]) if pairwise else None,
    )  # fmt: skip


def summary_table(rows: pd.DataFrame, folds: int, comparisons: dict[str, TaskComparison]) -> pd.DataFrame:
    """One row per task and model: held-out AUC mean, sd and corrected 95% interval, mean rank, official test AUC
    (mean and sd over the folds' selected heads) and the task's Friedman p."""
    table = []
    for (task, backbone), members in rows.groupby(["task", "backbone"], sort=False):
        mean, sd, low, high = corrected_interval(members["auc"], folds)
        comparison = comparisons[task]
        table.append({
            "task": task, "backbone": backbone, "n_folds": int(members["auc"].notna().sum()), "mean": mean, "sd": sd,
            "ci_low": low, "ci_high": high, "mean_rank": float(comparison.mean_ranks.get(backbone, math.nan)),
            "test_auc": float(members["test_auc"].mean()), "test_auc_sd": float(members["test_auc"].std(ddof=1)),
            "friedman_p": math.nan if comparison.friedman_p is None else comparison.friedman_p,
        })  # fmt: skip
    order = {task: i for i, task in enumerate(comparisons)}
    frame = pd.DataFrame(table, columns=list(SUMMARY_COLUMNS))
    return frame.sort_values(["task", "mean_rank"], key=lambda c: c.map(order) if c.name == "task" else c,
                             ignore_index=True)  # fmt: skip


def summarize(result: CrossValResult) -> CrossValSummary:
    """The table and the per-task comparisons of a cross-validation's rows."""
    rows = pd.DataFrame(result.rows)
    tasks = list(dict.fromkeys(rows["task"])) if len(rows) else []
    comparisons = {task: compare(rows, task) for task in tasks}
    table = summary_table(rows, result.folds, comparisons) if len(rows) else pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    return CrossValSummary(result.folds, result.repeats, result.seconds, result.trained, table, comparisons)
