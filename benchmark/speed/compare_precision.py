"""Fidelity of one run's features against another's on the same data: the same command in two precisions (float32
against int8 or bfloat16), compared feature by feature and head by head.

    python -m benchmark.speed.compare_precision REFERENCE_RESULTS OTHER_RESULTS --cache-dir CACHE [--resamples 2000]

For each backbone: the cosine per image between the two runs' cached features (every image of the run, min and
mean); for each backbone, kind of head (Keras head, logistic-regression probe) and task: the selected head's test
AUC in both runs, their paired difference with a percentile bootstrap interval over the same resampled test images
(``paired_auc_difference``), whether the other run's AUC lies inside the reference's own 95% interval (the
leaderboard's), and whether validation selected the same grid point; then every leaderboard number (accuracy,
sensitivity, specificity, precision, F1, AUC) of the other run outside the reference's interval. Printed as Markdown
tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from benchmark.evaluation.metrics import binary_tasks, paired_auc_difference
from benchmark.run_folder import LEADERBOARD_CSV, PREDICTIONS_CSV, RUN_JSON
from features.cache import FeatureCache
from features.settings import parse_compute_key

GRID_POINT = ["lr", "dropout", "l2", "lr_schedule"]


def feature_rows(reference: Path, other: Path, cache: Path) -> list[dict]:
    """Per backbone and size, the cosine per image between the two runs' cached features."""
    runs = [json.loads((folder / RUN_JSON).read_text()) for folder in (reference, other)]
    features = FeatureCache(cache)
    rows = []
    for name in runs[0]["extraction"]:
        backbone, size = parse_compute_key(name)
        a, b = (np.asarray(features.load(backbone, run["extraction"][name]["key"]), dtype=np.float64) for run in runs)
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        rows.append({"backbone": backbone, "size": size, "images": len(a), "cosine min": f"{cosine.min():.4f}",
                     "cosine mean": f"{cosine.mean():.5f}"})  # fmt: skip
    return rows


def head_rows(reference: Path, other: Path, resamples: int) -> list[dict]:
    """Per backbone, kind and task: both selected heads' test AUC, their paired difference and its interval."""
    boards = [_internal(pd.read_csv(folder / LEADERBOARD_CSV)) for folder in (reference, other)]
    tests = [pd.read_csv(folder / PREDICTIONS_CSV).query("split == 'test'") for folder in (reference, other)]
    classes = tuple(json.loads((reference / RUN_JSON).read_text())["classes"])
    rows = []
    for (backbone, kind, task), mine in boards[0].groupby(["backbone", "kind", "task"], sort=False):
        theirs = boards[1].query("backbone == @backbone and kind == @kind and task == @task")
        if theirs.empty:
            continue
        positive = binary_tasks(classes)[task]
        scores = [_task_scores(test, row["head_id"], positive) for test, row in
                  zip(tests, (mine.iloc[0], theirs.iloc[0]), strict=True)]  # fmt: skip
        truth, a, b = scores[0][0], scores[0][1], scores[1][1].reindex(scores[0][1].index)
        delta, low, high = paired_auc_difference(truth.to_numpy(), b.to_numpy(), a.to_numpy(), resamples=resamples)
        ref, oth = mine.iloc[0], theirs.iloc[0]
        rows.append({
            "backbone": backbone, "kind": kind, "task": task, "AUC reference": f"{ref['auc']:.4f}",
            "AUC other": f"{oth['auc']:.4f}", "difference [95% paired]": f"{delta:+.4f} [{low:+.4f}, {high:+.4f}]",
            "inside the reference's interval": "yes" if ref["auc_ci_low"] <= oth["auc"] <= ref["auc_ci_high"] else "NO",
            "same grid point": "yes" if all(ref[c] == oth[c] for c in GRID_POINT if c in ref) else "no",
        })  # fmt: skip
    return rows


def outside_rows(reference: Path, other: Path) -> list[dict]:
    """Every leaderboard number of the other run outside the reference's own 95% interval (``<metric>_ci_low`` and
    ``_ci_high``), per backbone, kind and task; and a last row counting how many numbers were compared."""
    boards = [_internal(pd.read_csv(folder / LEADERBOARD_CSV)).set_index(["backbone", "kind", "task"])
              for folder in (reference, other)]  # fmt: skip
    metrics = [c.removesuffix("_ci_low") for c in boards[0].columns if c.endswith("_ci_low")]
    both = boards[0].index.intersection(boards[1].index)
    rows, compared = [], 0
    for where in both:
        for metric in metrics:
            ref, low, high = (boards[0].loc[where, c] for c in (metric, f"{metric}_ci_low", f"{metric}_ci_high"))
            value = boards[1].loc[where, metric]
            if any(pd.isna(v) for v in (ref, low, high, value)):
                continue
            compared += 1
            if not low <= value <= high:
                rows.append({"backbone": where[0], "kind": where[1], "task": where[2], "metric": metric,
                             "reference [95%]": f"{ref:.4f} [{low:.4f}, {high:.4f}]", "other": f"{value:.4f}"})
    rows.append({"backbone": f"{len(rows)} of {compared} numbers outside", "kind": "", "task": "", "metric": "",
                 "reference [95%]": "", "other": ""})  # fmt: skip
    return rows


def _internal(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard's rows of the run's own test set (an external test set's rows left out)."""
    return board[board["eval_set"] == "internal"] if "eval_set" in board else board


def _task_scores(test: pd.DataFrame, head_id: str, positive: tuple[str, ...]) -> tuple[pd.Series, pd.Series]:
    """``(truth, score)`` of one head's test predictions for a task, indexed by image path."""
    rows = test[test["head_id"] == head_id].set_index("path")
    return rows["label"].isin(positive), rows[[f"p_{name}" for name in positive]].sum(axis=1)


def main(argv: list[str] | None = None) -> int:
    """Print the feature and head tables."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.speed.compare_precision", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("reference", type=Path, help="the reference run's results folder (float32)")
    parser.add_argument("other", type=Path, help="the other run's results folder (same data, other precision)")
    parser.add_argument("--cache-dir", type=Path, required=True, help="the feature cache both runs wrote to")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args(argv)
    print(tabulate(feature_rows(args.reference, args.other, args.cache_dir), headers="keys", tablefmt="github"))
    print()
    print(tabulate(head_rows(args.reference, args.other, args.resamples), headers="keys", tablefmt="github"))
    print()
    print(tabulate(outside_rows(args.reference, args.other), headers="keys", tablefmt="github"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
