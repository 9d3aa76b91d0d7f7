"""verify's check of ``subgroups.csv`` (``--subgroups``), recomputed with scikit-learn from predictions.csv.

predictions.csv names each test image's subgroup (``subgroup_<attribute>``). Per head, task, attribute and
subgroup: n, positives and negatives; the AUC, and the sensitivity and specificity at the leaderboard's
``op_threshold`` (the same threshold, chosen on validation), where the subgroup has at least ``MIN_CASES``
positives (sensitivity), negatives (specificity) or both (AUC), and none where it has fewer; each value inside its
interval; every subgroup of the test images listed. report.json's gaps: max − min over the recorded subgroups
with a value, and the two it names. Not checked: the interval bounds (resampled).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, roc_auc_score

from benchmark.evaluation.subgroups import MIN_CASES, NOT_RECORDED, SUBGROUP_PREFIX
from benchmark.evaluation.verify_files import VerifyError, as_numbers, read_table

TOLERANCE = 1e-9
_NUMBERS = ("n", "positives", "negatives", "threshold", *(f"{metric}{end}" for metric in
            ("auc", "sensitivity", "specificity") for end in ("", "_ci_low", "_ci_high")))  # fmt: skip
_KEY = ("head_id", "task", "attribute", "subgroup")


def load_subgroups(path: Path) -> pd.DataFrame | None:
    """subgroups.csv with its numbers as floats; None where the run wrote none (no ``--subgroups``)."""
    if not path.is_file():
        return None
    frame = read_table(path, (*_KEY, *_NUMBERS, "too_small"), dtype=str, keep_default_na=False)
    return as_numbers(frame, path, _NUMBERS, missing_ok=True)


def _same(got: float, want: float) -> bool:
    return (math.isnan(got) and math.isnan(want)) or abs(got - want) <= TOLERANCE


def _expected(truth: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """n, positives, negatives, and AUC, sensitivity and specificity by scikit-learn where there are enough cases."""
    positives, negatives = int(truth.sum()), int((~truth).sum())
    want = {"n": float(len(truth)), "positives": float(positives), "negatives": float(negatives),
            "auc": math.nan, "sensitivity": math.nan, "specificity": math.nan}  # fmt: skip
    tn, fp, fn, tp = confusion_matrix(truth, score >= threshold, labels=[False, True]).ravel()
    if positives >= MIN_CASES:
        want["sensitivity"] = tp / (tp + fn)
    if negatives >= MIN_CASES:
        want["specificity"] = tn / (tn + fp)
    if positives >= MIN_CASES and negatives >= MIN_CASES:
        want["auc"] = roc_auc_score(truth, score)
    return want


def _check_group(rows: pd.DataFrame, groups: np.ndarray, truth: np.ndarray, score: np.ndarray,
                 threshold: float) -> list[str]:  # fmt: skip
    """One head's rows of one task and attribute against its test images' subgroups (``groups``)."""
    problems = []
    head_id, task, attribute = rows.iloc[0][["head_id", "task", "attribute"]]
    where = f"subgroups.csv {head_id} {task} {attribute}"
    unlisted = sorted(set(groups) - set(rows["subgroup"]))
    if unlisted:
        problems.append(f"{where}: subgroup(s) {', '.join(unlisted)} of the test images not listed")
    for row in rows.to_dict("records"):
        mask = groups == row["subgroup"]
        want = _expected(truth[mask], score[mask], threshold)
        if not _same(row["threshold"], threshold):
            problems.append(f"{where} {row['subgroup']}: threshold {row['threshold']}, leaderboard {threshold}")
        for name, value in want.items():
            if not _same(row[name], value):
                problems.append(f"{where} {row['subgroup']} {name}: subgroups.csv {row[name]}, scikit-learn {value}")
        for metric in ("auc", "sensitivity", "specificity"):
            low, high, value = row[f"{metric}_ci_low"], row[f"{metric}_ci_high"], row[metric]
            if not any(math.isnan(v) for v in (low, high, value)) and not low - 1e-9 <= value <= high + 1e-9:
                problems.append(f"{where} {row['subgroup']} {metric}: {value} outside its interval {low}–{high}")
        if (row["too_small"] == "") != all(not math.isnan(want[m]) for m in ("auc", "sensitivity", "specificity")):
            problems.append(f"{where} {row['subgroup']}: too_small {row['too_small']!r} for {int(want['positives'])} "
                            f"positives and {int(want['negatives'])} negatives (minimum {MIN_CASES})")  # fmt: skip
    return problems


def check_gaps(table: pd.DataFrame, gaps: list[dict]) -> list[str]:
    """report.json's gaps: per head, task and attribute, max − min of each metric over the recorded subgroups with
    a value, and the two subgroups named holding those values."""
    problems = []
    for gap in gaps:
        rows = table[(table["head_id"] == gap["head_id"]) & (table["task"] == gap["task"])
                     & (table["attribute"] == gap["attribute"]) & (table["subgroup"] != NOT_RECORDED)]  # fmt: skip
        for metric in ("auc", "sensitivity"):
            values = rows.set_index("subgroup")[metric].dropna()
            listed = gap["gaps"].get(metric)
            where = f"report.json gap {gap['head_id']} {gap['task']} {gap['attribute']} {metric}"
            if len(values) < 2:
                problems += [f"{where}: listed, but fewer than two subgroups have a value"] if listed else []
            elif listed is None:
                problems.append(f"{where}: missing ({len(values)} subgroups have a value)")
            elif not (_same(listed["gap"], values.max() - values.min())
                      and _same(values.get(listed["low"], math.nan), values.min())
                      and _same(values.get(listed["high"], math.nan), values.max())):  # fmt: skip
                problems.append(f"{where}: {listed['low']}–{listed['high']} {listed['gap']}, subgroups.csv gives "
                                f"{values.idxmin()}–{values.idxmax()} {values.max() - values.min()}")  # fmt: skip
    return problems


def check_subgroups(table: pd.DataFrame, board: pd.DataFrame, test: pd.DataFrame, cases, report: dict | None,
                    ) -> list[str]:  # fmt: skip
    """subgroups.csv against the test predictions (``test``) and the leaderboard's thresholds (``board``), and
    report.json's subgroup rows and gaps. ``cases(head, positive)`` gives a task's truth, score and which of
    the head's rows it scores (verify's own reading of predictions.csv)."""
    problems = []
    for (head_id, task, attribute), rows in table.groupby(["head_id", "task", "attribute"], sort=False):
        row = board[(board["head_id"] == head_id) & (board["task"] == task)]
        head = test[test["head_id"] == head_id]
        column = f"{SUBGROUP_PREFIX}{attribute}"
        if row.empty or head.empty:
            problems.append(f"subgroups.csv {head_id} {task}: no such leaderboard row or test predictions")
            continue
        if column not in head:
            raise VerifyError(f"predictions.csv lacks the column {column} that subgroups.csv's {attribute} needs")
        truth, score, scored = cases(head, row.iloc[0]["positive"])
        groups = head[column].astype(str).to_numpy()[scored]
        problems += _check_group(rows, groups, truth, score, float(row.iloc[0]["op_threshold"]))
    if report is not None:
        listed = report.get("subgroups", {})
        if len(listed.get("rows", [])) != len(table):
            problems.append(f"report.json lists {len(listed.get('rows', []))} subgroup rows, subgroups.csv "
                            f"{len(table)}")  # fmt: skip
        problems += check_gaps(table, listed.get("gaps", []))
    return problems
