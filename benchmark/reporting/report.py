"""What a run writes: leaderboard.md, leaderboard.csv, predictions.csv, grid.csv, skipped.csv, leakage.csv."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from benchmark.config import RunConfig
from benchmark.evaluation.metrics import (
    binary_metrics,
    binary_tasks,
    bootstrap_intervals,
    expected_calibration_error,
    macro_auc,
    multiclass_accuracy,
    multiclass_confusion,
    operating_point,
    paired_auc_difference,
    task_decision,
    task_truth_and_score,
)
from benchmark.records import HeadResult, SweepResult
from benchmark.reporting.plots import (
    plot_confusion_matrix,
    plot_metric_bars,
    plot_reliability,
    plot_roc_curves,
    plot_training_curves,
)
from benchmark.settings import GridKey, ReportSettings, model_name
from benchmark.training.sweep import grid_rows
from common.files import atomic_write_json, atomic_write_text
from features.data.dataset import Dataset, findings_label

METRIC_COLUMNS = ("sensitivity", "specificity", "accuracy", "precision", "f1", "auc")


def _head_columns(result: HeadResult) -> dict:
    """The columns that say which head a row is about."""
    return {
        "backbone": result.backbone,
        "image_size": result.image_size,
        **result.grid_key()._asdict(),
        "seed": result.settings.seed,
    }


def test_quality(
    test_truth: np.ndarray,
    decision: np.ndarray,
    test_score: np.ndarray,
    val_truth: np.ndarray,
    val_score: np.ndarray,
    settings: ReportSettings,
) -> dict:
    """Bootstrap intervals, calibration and the validation-chosen operating point of one head on one task."""
    columns = {"ece": expected_calibration_error(test_truth, test_score)}
    if settings.bootstrap:
        intervals = bootstrap_intervals(test_truth, decision, test_score, resamples=settings.bootstrap,
                                        seed=settings.seed)  # fmt: skip
        for metric, (low, high) in intervals.items():
            columns[f"{metric}_ci_low"], columns[f"{metric}_ci_high"] = low, high
    point = operating_point(val_truth, val_score, test_truth, test_score, settings.target_sensitivity)
    return columns | {f"op_{name}": value for name, value in point.items()}


def _test_decision(
    source: Dataset, labels: np.ndarray | None, probabilities: np.ndarray, positives: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A task's test truth, decision and score; on an external set with class groups, on the images it can score."""
    if labels is not None:
        return task_decision(labels, probabilities, source.classes, positives)
    keep, task_labels = source.task_labels("test", positives)
    return task_decision(task_labels[keep], probabilities[keep], source.classes, positives)


def leaderboard_rows(
    results: list[HeadResult], dataset: Dataset, run_info: dict, settings: ReportSettings,
    external: Dataset | None = None,
) -> list[dict]:
    """One flat row per head and task: test metrics with bootstrap intervals, calibration, the
    operating point, the settings and the versions.

    With ``external``, the rows are those of the external test set instead (the heads' ``external``
    probabilities; the operating threshold still chosen on validation).
    """
    source, val_labels = external or dataset, dataset.labels("val")
    labels = None if source.has_groups() else source.labels("test")
    rows = []
    for result in results:
        probabilities = result.probabilities["external" if external is not None else "test"]
        three_class = math.nan if labels is None else multiclass_accuracy(labels, probabilities)
        extra = {"macro_auc": macro_auc(labels, probabilities)} if dataset.multi_label else {}
        for task, positives in binary_tasks(dataset.classes, dataset.multi_label).items():
            truth, decision, score = _test_decision(source, labels, probabilities, positives)
            if not len(truth):  # a finding (or class group) the external set cannot score on this task
                continue
            val_truth, val_decision, val_score = task_decision(
                val_labels, result.probabilities["val"], dataset.classes, positives
            )
            validation = binary_metrics(val_truth, val_decision, val_score)
            rows.append(
                {
                    **_head_columns(result),
                    "task": task,
                    "positive": "+".join(positives),
                    **binary_metrics(truth, decision, score),
                    **test_quality(truth, decision, score, val_truth, val_score, settings),
                    **{f"val_{metric}": validation[metric] for metric in METRIC_COLUMNS},
                    "n_test": len(truth),
                    "multiclass_accuracy": three_class,
                    **extra,
                    "best_epoch": result.best_epoch,
                    "epochs_run": result.epochs_run,
                    "best_val_loss": result.best_val_loss,
                    "weights": result.weights,
                    "head_id": result.head_id,
                    **{f"config_{key}": value for key, value in RunConfig.display(run_info["config"]).items()},
                    "git": run_info["git"],
                    **{f"version_{key}": value for key, value in run_info["versions"].items()},
                }
            )
    return rows


def prediction_rows(
    results: list[HeadResult], dataset: Dataset, split: str = "test", key: str | None = None
) -> list[dict]:
    """One row per image of ``split`` per head, with every class probability.

    ``key`` names the heads' probabilities (default: ``split``) and the rows' ``split`` column: ``external``
    for the external test set, whose records are all in its ``test`` split.
    """
    records = dataset.split(split)
    rows = []
    for result in results:
        probabilities = result.probabilities[key or split]
        if dataset.multi_label:
            predicted = [findings_label([n for n, p in zip(dataset.classes, probs, strict=True) if p >= 0.5])
                         for probs in probabilities]  # fmt: skip
        else:
            predicted = [dataset.classes[guess] for guess in np.argmax(probabilities, axis=1)]
        for record, probs, guess in zip(records, probabilities, predicted, strict=True):
            rows.append(
                {
                    **_head_columns(result),
                    "head_id": result.head_id,
                    "split": key or split,
                    "path": record.path,
                    "label": record.label,
                    **{f"p_{name}": float(p) for name, p in zip(dataset.classes, probs, strict=True)},
                    "predicted": guess,
                }
            )
    return rows


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


SETTING_HEADERS = ["size", "head", "lr", "dropout", "l2", "schedule"]


def _setting_cells(row) -> list[str]:
    """A head's settings as table cells; learning rates and penalties in ``g`` format, so 1e-4 stays legible."""
    if row["kind"] == "logreg":
        return [str(row["image_size"]), "logreg (L-BFGS)", "—", "—", f"{row['l2']:g}", "—"]
    return [str(row["image_size"]), "Adam", f"{row['lr']:g}", f"{row['dropout']:g}", f"{row['l2']:g}",
            row["lr_schedule"]]  # fmt: skip


def _warnings(run_info: dict, dataset: Dataset, settings: ReportSettings) -> list[str]:
    lines = []
    leaked_to_test = {r["sha256"] for r in dataset.leakage if r["split"] == "test"} & {
        r["sha256"] for r in dataset.leakage if r["split"] != "test"
    }
    if leaked_to_test:
        lines.append(
            f"> **Leakage: {len(leaked_to_test)} test image(s) also appear in train or validation** (same "
            "bytes; listed in `leakage.csv`). Test scores may be optimistic. `--leakage drop` removes the copies."
        )
    if run_info.get("phantom"):
        lines.append(
            "> **SYNTHETIC PHANTOM DATA: THESE NUMBERS ARE NOT MEDICAL.** The images are generated "
            "drawings of normal lungs, focal consolidation and a diffuse interstitial pattern, made "
            "to show the pipeline working offline. Point `--data` at real radiographs for real numbers."
        )
    if settings.random_init:
        lines.append(
            "> **Weights: none (random initialisation).** The backbones never saw ImageNet, so this "
            "measures the pipeline, not ImageNet transfer. Use `--weights imagenet` (or a weights "
            "folder) for the real comparison."
        )
    if settings.limit_per_class:
        lines.append(f"> Subset run: at most {settings.limit_per_class} images per class and split.")
    return lines


def _mean_std(values: pd.Series) -> str:
    values = values.astype(float)
    if values.isna().all():
        return "n/a"
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=0):.3f}"


def _cell(members: pd.DataFrame, metric: str) -> str:
    """Mean ± std over seeds; with one seed, the value and its bootstrap 95% interval."""
    text = _mean_std(members[metric])
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    if len(members) == 1 and low in members and not math.isnan(members[low].iloc[0]):
        text += f" ({members[low].iloc[0]:.2f}–{members[high].iloc[0]:.2f})"
    return text


def _summary(frame: pd.DataFrame, sort_metric: str) -> pd.DataFrame:
    """Test metrics per selected grid point, mean and standard deviation over its seeds."""
    keys = list(GridKey._fields)
    grouped = frame.groupby(keys, sort=False)
    summary = grouped[list(METRIC_COLUMNS)].mean().reset_index()
    summary["seeds"] = grouped.size().to_numpy()
    for metric in METRIC_COLUMNS:
        summary[f"{metric}_std"] = grouped[metric].std(ddof=0).to_numpy()
    return summary.sort_values([sort_metric, "sensitivity"], ascending=False)


def _validation_section(frame: pd.DataFrame, dataset: Dataset) -> list[str]:
    """Each selected head's validation metrics beside its test metrics, and the gap."""
    out = [
        "## Validation beside test",
        "",
        "The heads were selected on validation, which is carved from the training pool; the test split was "
        "collected apart. Where validation is far above test, validation was optimistic: expect the test numbers. "
        + ("Decisions at probability 0.5" if dataset.multi_label else "Argmax decisions")
        + "; mean over seeds; Δ = test − validation.",
        "",
    ]
    metrics = ("auc", "sensitivity", "specificity", "f1")
    headers = ["backbone"] + [f"{name} {m}" for m in metrics for name in ("val", "test", "Δ")]
    for task in binary_tasks(dataset.classes, dataset.multi_label):
        body = []
        for backbone, members in frame[frame["task"] == task].groupby("backbone", sort=False):
            cells = [backbone]
            for metric in metrics:
                val, test = members[f"val_{metric}"].mean(), members[metric].mean()
                cells += [_fmt(float(val)), _fmt(float(test)), f"{test - val:+.3f}"]
            body.append(cells)
        out += [f"### {task}", "", tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True), ""]
    return out


def _probe_section(winners: list[HeadResult], dataset: Dataset, settings: ReportSettings) -> list[str]:
    """Each backbone's selected Keras head against its selected logistic-regression probe (first seeds)."""
    firsts: dict[str, HeadResult] = {}
    for winner in sorted(winners, key=lambda w: w.settings.seed):
        firsts.setdefault(winner.backbone, winner)
    pairs = [(head, firsts[model_name(name, "logreg")]) for name, head in firsts.items()
             if head.settings.kind == "keras" and model_name(name, "logreg") in firsts]  # fmt: skip
    if not pairs:
        return []
    labels = dataset.labels("test")
    body = []
    for head, probe in pairs:
        for task, positives in binary_tasks(dataset.classes, dataset.multi_label).items():
            truth, head_score = task_truth_and_score(labels, head.probabilities["test"], dataset.classes, positives)
            _, probe_score = task_truth_and_score(labels, probe.probabilities["test"], dataset.classes, positives)
            diff, low, high = paired_auc_difference(truth, head_score, probe_score,
                                                    resamples=settings.bootstrap or 1000, seed=settings.seed)
            body.append([head.backbone, _fmt(head.best_val_loss), _fmt(probe.best_val_loss), task,
                         f"{diff:+.3f}", f"{low:+.3f} to {high:+.3f}"])  # fmt: skip
    headers = ["backbone", "val loss head", "val loss probe", "task", "test AUC head − probe", "95% interval"]
    return [
        "## The head against the logistic-regression probe",
        "",
        "The standard baseline for frozen features: each backbone's selected Keras head beside its selected "
        "logistic-regression probe (first seeds). Validation loss decided both selections; the AUC difference "
        "is on test, with a paired bootstrap interval (both models scored on the same resamples of the test "
        "images). An interval that excludes 0 is a real test difference that validation could not see.",
        "",
        tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True),
        "",
    ]


def _operating_point_section(frame: pd.DataFrame, dataset: Dataset, settings: ReportSettings) -> list[str]:
    target = settings.target_sensitivity
    out = [
        f"## Operating points: sensitivity {target:g} chosen on validation",
        "",
        "A missed disease costs more than a false alarm, so besides the argmax decision each selected head "
        f"gets a threshold on its positive-class probability: the highest one that reaches sensitivity {target:g} "
        "on the **validation** split. It is applied unchanged to test, which shows whether the sensitivity "
        "holds and what specificity it costs. Mean ± std over seeds.",
        "",
    ]
    columns = ["op_threshold", "op_val_sensitivity", "op_val_specificity", "op_test_sensitivity",
               "op_test_specificity", "op_test_precision"]  # fmt: skip
    for task in binary_tasks(dataset.classes, dataset.multi_label):
        rows = frame[frame["task"] == task]
        body = [
            [backbone, *[_mean_std(members[c]) for c in columns],
             "/".join(str(int(members[f"op_test_{n}"].sum())) for n in ("tp", "fn", "fp", "tn"))]
            for backbone, members in rows.groupby("backbone", sort=False)
        ]  # fmt: skip
        headers = ["backbone", "threshold", "val sens", "val spec", "test sens", "test spec", "test precision",
                   "test TP/FN/FP/TN"]  # fmt: skip
        out += [f"### {task}", "", tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True), ""]
    return out


def _calibration_section(frame: pd.DataFrame, dataset: Dataset, plots: dict[str, str]) -> list[str]:
    tasks = list(binary_tasks(dataset.classes, dataset.multi_label))
    body = [
        [backbone, *[_mean_std(members[members["task"] == task]["ece"]) for task in tasks]]
        for backbone, members in frame.groupby("backbone", sort=False)
    ]
    out = [
        "## Calibration (test)",
        "",
        "Expected calibration error of each task's positive-class probability: the count-weighted mean gap "
        "between predicted probability and observed frequency over 10 equal-width bins (0 is perfect).",
        "",
        tabulate(body, headers=["backbone", *[f"ECE {t}" for t in tasks]], tablefmt="pipe", disable_numparse=True),
        "",
    ]
    return out + [f"![{title}]({path})" for title, path in plots.items() if title.startswith("Reliability")] + [""]


def leaderboard_markdown(
    rows: list[dict], sweep: SweepResult, dataset: Dataset, run_info: dict, plots: dict[str, str],
    settings: ReportSettings, external: Dataset | None = None, external_rows: list[dict] | None = None,
) -> str:
    """The human-readable leaderboard: a table per task, the grid, confusion matrices, plots, provenance."""
    frame = pd.DataFrame(rows)
    out = ["# cxr-bench leaderboard", ""]
    for line in _warnings(run_info, dataset, settings):
        out += [line, ""]
    out += [f"Generated {run_info['timestamp']} by cxr-bench `{run_info['git']}` on {run_info['machine']}.", "",
            f"Command: `{run_info['command']}`", "", *_extraction_line(run_info)]  # fmt: skip
    out += _data_section(dataset)
    out += _selection_section(sweep, settings, dataset.multi_label)
    out += _task_tables(frame, dataset, settings.sort_metric)
    if external is not None and external_rows:
        out += _external_section(frame, pd.DataFrame(external_rows), external, dataset)
    out += _validation_section(frame, dataset)
    out += _probe_section(sweep.winners, dataset, settings)
    out += _operating_point_section(frame, dataset, settings)
    out += _calibration_section(frame, dataset, plots)
    if plots:
        shown = [f"![{title}]({path})" for title, path in plots.items() if not title.startswith("Reliability")]
        out += ["## Plots", "", *shown, ""]
    if dataset.multi_label:
        out += _macro_auc_section(frame, pd.DataFrame(external_rows or []))
    else:
        out += _confusion_section(sweep.winners, dataset)
    out += _grid_section(sweep, dataset, settings.select_by)
    out += _provenance_section(run_info)
    return "\n".join(out)


def _external_section(frame: pd.DataFrame, external_frame: pd.DataFrame, external: Dataset,
                      dataset: Dataset) -> list[str]:  # fmt: skip
    """The selected heads on the external test set beside the internal test: the drop, per task."""
    counts = external.counts()["test"]
    paths = {record.path for record in external.records}
    kept = [row for row in external.leakage if row["path"] in paths]
    warning = ([f"> **{len(kept)} external image(s) are also in the internal data** (same bytes; listed in "
                "`external_leakage.csv`): the external scores may be optimistic. `--leakage drop` leaves them out.",
                ""] if kept else [])  # fmt: skip
    out = ["## External test beside the internal test", "", *warning, *[f"- {note}" for note in external.notes],
           f"- Files left out: {len(external.skipped)}" + (" (see `external_skipped.csv`)" if external.skipped else ""),
           ("- Images showing each finding: " if external.multi_label else "- Images per class: ")
           + ", ".join(f"{label} {n}" for label, n in counts.items()), "",
           "The heads selected on validation, unchanged (no retraining, no new threshold), scored on a second "
           "dataset. Δ = external − internal; a large negative Δ means the model does not hold up on other "
           "images. `op sens` is the sensitivity at the threshold chosen on validation. Mean over seeds; "
           "every row, with its intervals, in `leaderboard.csv` (`eval_set` external). Fine-tuned heads are "
           "not scored here.", ""]  # fmt: skip
    metrics = ("auc", "sensitivity", "specificity", "f1", "op_test_sensitivity")
    headers = ["backbone"] + [f"{name} {m.replace('op_test_sensitivity', 'op sens')}" for m in metrics
                              for name in ("internal", "external", "Δ")]  # fmt: skip
    for task in binary_tasks(dataset.classes, dataset.multi_label):
        body = []
        if not (external_frame["task"] == task).any():
            continue  # a finding the external set does not record
        for backbone, members in external_frame[external_frame["task"] == task].groupby("backbone", sort=False):
            internal = frame[(frame["task"] == task) & (frame["backbone"] == backbone)]
            cells = [backbone]
            for metric in metrics:
                inside, outside = float(internal[metric].mean()), float(members[metric].mean())
                gap = outside - inside
                cells += [_fmt(inside), _fmt(outside), "n/a" if math.isnan(gap) else f"{gap:+.3f}"]
            body.append(cells)
        out += [f"### {task} (external)", "", tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True),
                ""]  # fmt: skip
    return out


def _data_section(dataset: Dataset) -> list[str]:
    """Where the data came from, what was left out, and the images per split and class."""
    counts = dataset.counts()
    return [
        "## Data and splits",
        "",
        f"- Data: `{dataset.root}` ({dataset.layout} layout), classes: {', '.join(dataset.classes)}",
        *[f"- {note}" for note in dataset.notes],
        f"- Files left out: {len(dataset.skipped)}" + (" (see `skipped.csv`)" if dataset.skipped else ""),
        f"- Leakage (same bytes in two splits or under two labels): {len({r['group'] for r in dataset.leakage})} "
        "image(s)" + (" (see `leakage.csv`)" if dataset.leakage else ""),
        "",
        tabulate(
            [[split, *counts[split].values(), len(dataset.split(split))] for split in counts],
            headers=["split", *dataset.classes, "images"],
            tablefmt="pipe",
        ),
        "",
    ]


def _decision_rule(multi_label: bool) -> str:
    """How a task's decision and its AUC score are taken from a head's probabilities."""
    if multi_label:
        return ("Multi-label: one sigmoid per finding; a finding's decision is its probability ≥ 0.5 and its AUC "
                "uses that probability, on the images whose value of the finding is known.")  # fmt: skip
    return ("A binary decision is the multi-class argmax mapped onto the task; AUC uses the summed probability "
            "of the positive classes.")  # fmt: skip


def _selection_section(sweep: SweepResult, settings: ReportSettings, multi_label: bool = False) -> list[str]:
    """How the heads were selected (validation only) and how the tables read."""
    rule = "lowest validation loss" if settings.select_by == "val_loss" else f"highest validation {settings.select_by}"
    out = [
        "## Selection rule",
        "",
        f"Each backbone's grid ({len(sweep.points)} trained heads in all) was scored on the **validation** "
        f"split only; per backbone, the grid point with the **{rule}** (mean over its seeds) was selected. "
        "Early stopping and the kept checkpoint also used validation loss. Only the selected heads were "
        "then predicted on the test split, once, for the tables below. " + _decision_rule(multi_label) + " "
        f"Tables are sorted by test **{settings.sort_metric}** (ties: sensitivity); with several seeds a cell is "
        "mean ± standard deviation, with one seed it is the value and its 95% bootstrap confidence interval "
        f"({settings.bootstrap} resamples of the test images; every seed's intervals are in `leaderboard.csv`).",
        "",
    ]
    if any(w.backbone.endswith("-ft") for w in sweep.winners):
        out += ["Rows named `<backbone>-ft` are that backbone fine-tuned end to end on images, starting from its "
                "selected frozen head (first seed): top layers unfrozen, BatchNormalization frozen, lower learning "
                "rates for earlier layers, early stopping on validation loss; how, in `weights` of `leaderboard.csv` "
                "and the `finetune_*` settings below.", ""]  # fmt: skip
    return out


def _task_tables(frame: pd.DataFrame, dataset: Dataset, sort_metric: str) -> list[str]:
    """The leaderboard proper: per task, the selected heads ranked by their test ``sort_metric``."""
    out = ["## Best per backbone: test results per task", ""]
    for task, positives in binary_tasks(dataset.classes, dataset.multi_label).items():
        summary = _summary(frame[frame["task"] == task], sort_metric)
        body = []
        for rank, (_, row) in enumerate(summary.iterrows(), start=1):
            members = frame[(frame["task"] == task) & (frame["backbone"] == row["backbone"])]
            body.append([rank, row["backbone"], *_setting_cells(row), row["seeds"]]
                        + [_cell(members, m) for m in METRIC_COLUMNS])  # fmt: skip
        headers = ["#", "backbone", *SETTING_HEADERS, "seeds", *METRIC_COLUMNS]
        out += [f"### {task} (positive: {' + '.join(positives)})", "",
                tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True), ""]  # fmt: skip
    return out


def _confusion_section(winners: list[HeadResult], dataset: Dataset) -> list[str]:
    """Each selected head's multi-class confusion matrix on test, summed over its seeds."""
    out = ["## Confusion matrices of the selected heads (test, summed over seeds)", "",
           "Rows: true class; columns: argmax class.", ""]  # fmt: skip
    labels = dataset.labels("test")
    for backbone in dict.fromkeys(w.backbone for w in winners):
        heads = [w for w in winners if w.backbone == backbone]
        matrix = sum(multiclass_confusion(labels, w.probabilities["test"], len(dataset.classes)) for w in heads)
        accuracy = np.mean([multiclass_accuracy(labels, w.probabilities["test"]) for w in heads])
        rows = [[name, *row] for name, row in zip(dataset.classes, matrix.tolist(), strict=True)]
        out += [
            f"**{backbone}** ({heads[0].image_size} px, {heads[0].settings.describe()}): "
            f"{len(dataset.classes)}-class accuracy {_fmt(float(accuracy))}",
            "",
            tabulate(rows, headers=["true \\ predicted", *dataset.classes], tablefmt="pipe"),
            "",
        ]
    return out


def _macro_auc_section(frame: pd.DataFrame, external_frame: pd.DataFrame) -> list[str]:
    """Multi-label: per backbone, the AUC averaged over findings (validation, test, external), mean over seeds."""
    body = []
    for backbone, members in frame.groupby("backbone", sort=False):
        heads = members.drop_duplicates("head_id")
        val_auc = members.groupby("head_id")["val_auc"].mean().mean()
        cells = [backbone, _fmt(float(val_auc)), _mean_std(heads["macro_auc"]),
                 _fmt(float(heads["multiclass_accuracy"].mean()))]  # fmt: skip
        if not external_frame.empty:
            outside = external_frame[external_frame["backbone"] == backbone].drop_duplicates("head_id")
            cells.append(_fmt(float(outside["macro_auc"].mean())) if len(outside) else "n/a")
        body.append(cells)
    headers = ["backbone", "val macro AUC", "test macro AUC", "test label accuracy"]
    headers += ["external macro AUC"] if not external_frame.empty else []
    return ["## Macro-averaged AUC per backbone", "",
            "The mean over findings of each finding's ROC AUC (findings whose AUC is undefined left out); label "
            "accuracy is the share of known (image, finding) values decided right at 0.5. Mean over seeds.", "",
            tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True), ""]  # fmt: skip


def _grid_section(sweep: SweepResult, dataset: Dataset, select_by: str) -> list[str]:
    """Every grid point's validation scores, the selected one marked; never a test number."""
    grid = pd.DataFrame(grid_rows(sweep.points, dataset.classes, select_by, dataset.multi_label))
    first_task = next(iter(binary_tasks(dataset.classes, dataset.multi_label)))
    chosen = {w.grid_key() for w in sweep.winners}
    body = []
    ordered = grid.sort_values(["backbone", "kind", "selection_score"], ascending=[True, False, False],
                               na_position="last")  # fmt: skip
    for _, row in ordered.iterrows():
        key = GridKey.of(row)._replace(backbone=model_name(row["backbone"], row["kind"]))
        done = row["seeds"] > 0
        body.append(
            ["**✓**" if key in chosen else "", row["backbone"], *_setting_cells(row), row["seeds"],
             _fmt(row["val_loss"]) if done else "failed",
             _fmt(row[f"val_{first_task}_auc"]) if done else row["errors"],
             _fmt(row["val_multiclass_accuracy"]) if done else ""]
        )  # fmt: skip
    headers = ["", "backbone", *SETTING_HEADERS, "seeds", "val loss", f"val {first_task} AUC", "val accuracy"]
    return ["## Every grid point (validation split only)", "",
            "✓ marks the selected point per backbone. Full scores: `grid.csv`.", "",
            tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True), ""]  # fmt: skip


def _extraction_line(run_info: dict) -> list[str]:
    """What the backbones computed in and where they ran, and why that precision (runs before issue 16: nothing)."""
    choice = run_info.get("precision")
    if not choice:
        return []
    runtime = run_info.get("runtime", "keras")  # a plain name in runs before --runtime auto
    if not isinstance(runtime, dict):
        runtime = {"requested": runtime, "runtime": runtime, "reason": "", "backbones": {}}
    how = f" (`--runtime {runtime['requested']}`: {runtime['reason']})" if runtime["reason"] else ""
    lines = [f"Features computed in **{choice['precision']}** (`--precision {choice['requested']}`: "
             f"{choice['reason']}), runtime **{runtime['runtime']}**{how}.", ""]  # fmt: skip
    for name, own in choice.get("backbones", {}).items():
        where = runtime["backbones"].get(name, runtime)
        if (where["runtime"], own["precision"]) != (runtime["runtime"], choice["precision"]):
            lines += [f"- {name}: **{where['runtime']}** ({where['reason']}), **{own['precision']}** ({own['reason']})"]
    return lines + ([""] if len(lines) > 2 else [])


def _provenance_section(run_info: dict) -> list[str]:
    """Every setting of the run and every package version."""
    return [
        "## Settings",
        "",
        tabulate(sorted(RunConfig.display(run_info["config"]).items()), headers=["setting", "value"],
                 tablefmt="pipe"),
        "",
        "## Versions",
        "",
        tabulate(sorted(run_info["versions"].items()), headers=["package", "version"], tablefmt="pipe"),
        "",
    ]


def plot_files(tasks: list[str], models: list[str], confusion: bool = True) -> dict[str, str]:
    """Title -> path under the results folder of every plot ``write_reports`` draws, in the report's order.

    The one list of them: the report writes these files and ``cxr-bench serve`` shows them. A multi-label
    run (``confusion`` False) has no confusion matrix.
    """
    files = {"Training curves": "plots/training_curves.png",
             "Test metrics per backbone and task": "plots/metric_bars.png"}  # fmt: skip
    for task in tasks:
        files[f"ROC {task}"] = f"plots/roc_{task}.png"
        files[f"Reliability {task}"] = f"plots/reliability_{task}.png"
    return files | {f"Confusion matrix {name}": f"plots/confusion_{name}.png" for name in models if confusion}


def _plots(results_dir: Path, rows: list[dict], sweep: SweepResult, dataset: Dataset) -> dict[str, str]:
    """Draw the report's PNGs into ``results_dir/plots``; return title -> relative path."""
    folder = results_dir / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    first = {}
    for winner in sweep.winners:
        first.setdefault(winner.backbone, winner)
    made = plot_files(list(binary_tasks(dataset.classes, dataset.multi_label)), list(first), not dataset.multi_label)
    path = {title: results_dir / relative for title, relative in made.items()}
    # A probe is fitted in one go: it has no curve to draw.
    curves = [w for w in first.values() if w.settings.kind != "logreg"] or list(first.values())
    plot_training_curves(
        {w.backbone: w.history for w in curves},
        path["Training curves"],
        best_epochs={w.backbone: w.best_epoch for w in curves},
        title="Training curves of the selected heads (first seed)",
    )
    frame = pd.DataFrame(rows)
    summary = frame.groupby(["task", "backbone"], sort=False)[list(METRIC_COLUMNS)].agg(["mean", "std"])
    flat = pd.DataFrame({"task": [t for t, _ in summary.index], "backbone": [b for _, b in summary.index]})
    for metric in METRIC_COLUMNS:
        flat[metric] = summary[(metric, "mean")].to_numpy()
        flat[f"{metric}_std"] = summary[(metric, "std")].fillna(0.0).to_numpy()
    plot_metric_bars(
        flat,
        path["Test metrics per backbone and task"],
        error_columns={m: f"{m}_std" for m in ("sensitivity", "specificity", "f1", "auc")},
    )
    labels = dataset.labels("test")
    for task, positives in binary_tasks(dataset.classes, dataset.multi_label).items():
        curves = {
            name: task_truth_and_score(labels, w.probabilities["test"], dataset.classes, positives)
            for name, w in first.items()
        }
        plot_roc_curves(curves, path[f"ROC {task}"], title=f"ROC, {task} (test, first seed)")
        plot_reliability(curves, path[f"Reliability {task}"], title=f"Reliability, {task} (test, first seed)")
    for name, winner in first.items() if not dataset.multi_label else ():
        matrix = multiclass_confusion(labels, winner.probabilities["test"], len(dataset.classes))
        plot_confusion_matrix(matrix, dataset.classes, path[f"Confusion matrix {name}"], title=f"{name} (test)")
    return made


def write_data_report(results_dir: Path, dataset: Dataset) -> dict[str, Path]:
    """Write ``skipped.csv`` (every file left out, with why) and ``leakage.csv``; return their paths.

    Written before any extraction, so they are there even when the run stops on bad data.
    """
    paths = {"skipped.csv": results_dir / "skipped.csv", "leakage.csv": results_dir / "leakage.csv"}
    atomic_write_text(
        paths["skipped.csv"], pd.DataFrame(dataset.skipped, columns=["path", "reason"]).to_csv(index=False)
    )
    columns = ["group", "sha256", "split", "label", "path", "problem"]
    atomic_write_text(paths["leakage.csv"], pd.DataFrame(dataset.leakage, columns=columns).to_csv(index=False))
    return paths


def write_external_skipped(results_dir: Path, external: Dataset) -> Path:
    """Write ``external_skipped.csv`` (every file of the external test set left out, with why) and
    ``external_leakage.csv`` (its images that are also in the internal data); return the first's path."""
    path = results_dir / "external_skipped.csv"
    atomic_write_text(path, pd.DataFrame(external.skipped, columns=["path", "reason"]).to_csv(index=False))
    columns = ["sha256", "path", "internal_split", "internal_path"]
    atomic_write_text(results_dir / "external_leakage.csv",
                      pd.DataFrame(external.leakage, columns=columns).to_csv(index=False))  # fmt: skip
    return path


def write_reports(
    results_dir: Path, sweep: SweepResult, dataset: Dataset, run_info: dict, settings: ReportSettings,
    external: Dataset | None = None,
) -> dict[str, Path]:
    """Write every report file of a run into ``results_dir``; return their paths by name.

    With an ``external`` test set, ``leaderboard.csv`` gains an ``eval_set`` column (internal, external)
    and its rows, ``predictions.csv`` its images (split ``external``), ``leaderboard.md`` its section.
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = leaderboard_rows(sweep.winners, dataset, run_info, settings)
    scored = [w for w in sweep.winners if "external" in w.probabilities]
    external_rows = leaderboard_rows(scored, dataset, run_info, settings, external) if external else []
    plots = _plots(results_dir, rows, sweep, dataset) if sweep.winners else {}
    paths = {
        "leaderboard.csv": results_dir / "leaderboard.csv",
        "predictions.csv": results_dir / "predictions.csv",
        "grid.csv": results_dir / "grid.csv",
        "leaderboard.md": results_dir / "leaderboard.md",
        "run.json": results_dir / "run.json",
    }
    board = [dict(row, eval_set="internal") for row in rows] + [dict(row, eval_set="external") for row in
                                                                   external_rows] if external else rows  # fmt: skip
    atomic_write_text(paths["leaderboard.csv"], pd.DataFrame(board).to_csv(index=False))
    predictions = prediction_rows(sweep.winners, dataset)
    predictions += prediction_rows(scored, external, key="external") if external else []
    atomic_write_text(paths["predictions.csv"], pd.DataFrame(predictions).to_csv(index=False))
    grid = grid_rows(sweep.points, dataset.classes, settings.select_by, dataset.multi_label)
    atomic_write_text(paths["grid.csv"], pd.DataFrame(grid).to_csv(index=False))
    markdown = leaderboard_markdown(rows, sweep, dataset, run_info, plots, settings, external, external_rows)
    atomic_write_text(paths["leaderboard.md"], markdown)
    atomic_write_json(paths["run.json"], run_info, default=str)
    return paths | write_data_report(results_dir, dataset)
