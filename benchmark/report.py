"""What a run writes: leaderboard.md, leaderboard.csv, predictions.csv, skipped.csv."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from benchmark.metrics import binary_tasks, evaluate, multiclass_accuracy, multiclass_confusion
from benchmark.run import HeadResult
from features.cache import atomic_write_text
from features.dataset import Dataset

METRIC_COLUMNS = ("sensitivity", "specificity", "accuracy", "precision", "f1", "auc")


def _head_columns(result: HeadResult) -> dict:
    """The columns that say which head a row is about."""
    return {
        "backbone": result.backbone,
        "image_size": result.image_size,
        "lr": result.settings.lr,
        "dropout": result.settings.dropout,
        "seed": result.settings.seed,
    }


def leaderboard_rows(results: list[HeadResult], dataset: Dataset, run_info: dict) -> list[dict]:
    """One flat row per head and task, with the test metrics, the settings and the versions."""
    labels = dataset.labels("test")
    rows = []
    for result in results:
        probabilities = result.probabilities["test"]
        three_class = multiclass_accuracy(labels, probabilities)
        for task, metrics in evaluate(labels, probabilities, dataset.classes).items():
            rows.append(
                {
                    **_head_columns(result),
                    "task": task,
                    "positive": "+".join(binary_tasks(dataset.classes)[task]),
                    **metrics,
                    "n_test": len(labels),
                    "multiclass_accuracy": three_class,
                    "best_epoch": result.head.best_epoch,
                    "epochs_run": result.head.epochs_run,
                    "best_val_loss": result.head.best_val_loss,
                    "weights": result.weights,
                    "head_id": result.head_id,
                    **{f"config_{key}": value for key, value in run_info["config"].items()},
                    "git": run_info["git"],
                    **{f"version_{key}": value for key, value in run_info["versions"].items()},
                }
            )
    return rows


def prediction_rows(results: list[HeadResult], dataset: Dataset, split: str = "test") -> list[dict]:
    """One row per image of ``split`` per head, with every class probability."""
    records = dataset.split(split)
    rows = []
    for result in results:
        probabilities = result.probabilities[split]
        predicted = np.argmax(probabilities, axis=1)
        for record, probs, guess in zip(records, probabilities, predicted, strict=True):
            rows.append(
                {
                    **_head_columns(result),
                    "head_id": result.head_id,
                    "split": split,
                    "path": record.path,
                    "label": record.label,
                    **{f"p_{name}": float(p) for name, p in zip(dataset.classes, probs, strict=True)},
                    "predicted": dataset.classes[guess],
                }
            )
    return rows


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _warnings(run_info: dict) -> list[str]:
    lines = []
    if run_info.get("phantom"):
        lines.append(
            "> **SYNTHETIC PHANTOM DATA: THESE NUMBERS ARE NOT MEDICAL.** The images are generated "
            "drawings of normal lungs, focal consolidation and a diffuse interstitial pattern, made "
            "to show the pipeline working offline. Point `--data` at real radiographs for real numbers."
        )
    if run_info["config"]["weights"] == "none":
        lines.append(
            "> **Weights: none (random initialisation).** The backbones never saw ImageNet, so this "
            "measures the pipeline, not ImageNet transfer. Use `--weights imagenet` (or a weights "
            "folder) for the real comparison."
        )
    if run_info["config"]["limit_per_class"]:
        lines.append(f"> Subset run: at most {run_info['config']['limit_per_class']} images per class and split.")
    return lines


def leaderboard_markdown(rows: list[dict], results: list[HeadResult], dataset: Dataset, run_info: dict) -> str:
    """The human-readable leaderboard: a table per task, then the confusion matrices and provenance."""
    sort_metric = run_info["config"]["sort_metric"]
    out = ["# cxr-bench leaderboard", ""]
    for line in _warnings(run_info):
        out += [line, ""]
    out += [
        f"Generated {run_info['timestamp']} by cxr-bench `{run_info['git']}` on {run_info['machine']}.",
        "",
        f"Command: `{run_info['command']}`",
        "",
        "## Data and splits",
        "",
        f"- Data: `{dataset.root}` ({dataset.layout} layout), classes: {', '.join(dataset.classes)}",
        *[f"- {note}" for note in dataset.notes],
        f"- Files left out: {len(dataset.skipped)}" + (" (see `skipped.csv`)" if dataset.skipped else ""),
        "",
    ]
    counts = dataset.counts()
    out += [
        tabulate(
            [[split, *counts[split].values(), sum(counts[split].values())] for split in counts],
            headers=["split", *dataset.classes, "total"],
            tablefmt="pipe",
        ),
        "",
        "## Test results per task",
        "",
        "Every choice (early stopping, checkpoint) was made on the validation split; the test split "
        "was predicted once, for these tables. A binary decision is the multi-class argmax mapped "
        "onto the task; AUC uses the summed probability of the positive classes. "
        f"Tables are sorted by **{sort_metric}** (ties: sensitivity), best first.",
        "",
    ]
    frame = pd.DataFrame(rows)
    for task, positives in binary_tasks(dataset.classes).items():
        table = frame[frame["task"] == task].sort_values([sort_metric, "sensitivity"], ascending=False)
        body = [
            [rank, row.backbone, row.image_size, _fmt(row.lr), _fmt(row.dropout)]
            + [_fmt(getattr(row, m)) for m in METRIC_COLUMNS]
            + [f"{row.tp}/{row.fn}/{row.fp}/{row.tn}", row.best_epoch, _fmt(row.best_val_loss)]
            for rank, row in enumerate(table.itertuples(), start=1)
        ]
        out += [
            f"### {task} (positive: {' + '.join(positives)})",
            "",
            tabulate(
                body,
                headers=[
                    "#",
                    "backbone",
                    "size",
                    "lr",
                    "dropout",
                    *METRIC_COLUMNS,
                    "TP/FN/FP/TN",
                    "best epoch",
                    "val loss",
                ],
                tablefmt="pipe",
                disable_numparse=True,
            ),
            "",
        ]
    out += ["## Multi-class accuracy and confusion matrices (test)", "", "Rows: true class; columns: argmax class.", ""]
    labels = dataset.labels("test")
    for result in results:
        probabilities = result.probabilities["test"]
        matrix = multiclass_confusion(labels, probabilities, len(dataset.classes))
        out += [
            f"**{result.head_id}**: {len(dataset.classes)}-class accuracy "
            f"{_fmt(multiclass_accuracy(labels, probabilities))}",
            "",
            tabulate(
                [[name, *row] for name, row in zip(dataset.classes, matrix.tolist(), strict=True)],
                headers=["true \\ predicted", *dataset.classes],
                tablefmt="pipe",
            ),
            "",
        ]
    out += [
        "## Settings",
        "",
        tabulate(sorted(run_info["config"].items()), headers=["setting", "value"], tablefmt="pipe"),
        "",
        "## Versions",
        "",
        tabulate(sorted(run_info["versions"].items()), headers=["package", "version"], tablefmt="pipe"),
        "",
    ]
    return "\n".join(out)


def write_reports(results_dir: Path, results: list[HeadResult], dataset: Dataset, run_info: dict) -> dict[str, Path]:
    """Write every report file of a run into ``results_dir``; return their paths by name."""
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = leaderboard_rows(results, dataset, run_info)
    paths = {
        "leaderboard.csv": results_dir / "leaderboard.csv",
        "predictions.csv": results_dir / "predictions.csv",
        "leaderboard.md": results_dir / "leaderboard.md",
        "skipped.csv": results_dir / "skipped.csv",
        "run.json": results_dir / "run.json",
    }
    atomic_write_text(paths["leaderboard.csv"], pd.DataFrame(rows).to_csv(index=False))
    atomic_write_text(paths["predictions.csv"], pd.DataFrame(prediction_rows(results, dataset)).to_csv(index=False))
    atomic_write_text(paths["leaderboard.md"], leaderboard_markdown(rows, results, dataset, run_info))
    atomic_write_text(
        paths["skipped.csv"], pd.DataFrame(dataset.skipped, columns=["path", "reason"]).to_csv(index=False)
    )
    atomic_write_text(paths["run.json"], json.dumps(run_info, indent=2, default=str))
    return paths
