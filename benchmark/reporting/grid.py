"""The grid table: one row per grid point, its seeds averaged (``grid.csv`` and the report's grid section).

Read from the sweep's ``PointRecord``s, so reporting shapes the table without
importing the training sweep that made them.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from benchmark.evaluation.metrics import binary_tasks
from benchmark.records import PointRecord
from benchmark.settings import GridKey


def grid_rows(
    points: list[PointRecord], classes: tuple[str, ...], select_by: str, multi_label: bool = False
) -> list[dict]:
    """One row per grid point (seeds averaged): validation scores only, with the selected one marked."""
    grouped: dict[GridKey, list[PointRecord]] = defaultdict(list)
    for point in points:
        grouped[point.key].append(point)
    rows = []
    for key, members in grouped.items():
        done = [p for p in members if p.done]
        row = key._asdict()
        row.update(seeds=len(done), failed=len(members) - len(done))
        row["errors"] = "; ".join(sorted({p.error for p in members if not p.done}))
        if done:
            row |= _mean_scores(done, classes, select_by, multi_label)
        rows.append(row)
    return rows


def _mean_scores(done: list[PointRecord], classes: tuple[str, ...], select_by: str, multi_label: bool) -> dict:
    """The validation columns of one grid point's row: each score's mean over its finished seeds."""
    row = {
        "val_loss": float(np.mean([p.val_loss for p in done])),
        "val_loss_std": float(np.std([p.val_loss for p in done])),
        "val_multiclass_accuracy": float(np.mean([p.val_multiclass_accuracy for p in done])),
    }
    if multi_label:
        row["val_macro_auc"] = float(np.mean([p.val_macro_auc for p in done]))
    for task in binary_tasks(classes, multi_label):
        for metric in ("auc", "sensitivity", "specificity"):
            row[f"val_{task}_{metric}"] = float(np.mean([p.val[task][metric] for p in done]))
    row["selection_score"] = float(np.mean([p.selection_score(select_by) for p in done]))
    return row
