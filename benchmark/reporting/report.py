"""What a run writes: report.json (rendered to leaderboard.md), leaderboard.csv, predictions.csv, grid.csv,
skipped.csv, leakage.csv."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.config import RunConfig
from benchmark.evaluation.crossval_stats import summarize
from benchmark.evaluation.metrics import (
    binary_metrics,
    binary_tasks,
    bootstrap_intervals,
    expected_calibration_error,
    macro_auc,
    multiclass_accuracy,
    multiclass_confusion,
    operating_point,
    task_decision,
    task_truth_and_score,
    threshold_for_sensitivity,
)
from benchmark.evaluation.subgroups import (
    GAP_METRICS,
    SUBGROUP_PREFIX,
    SubgroupSpec,
    largest_gap,
    parse_subgroups,
    score_subgroups,
)
from benchmark.records import HeadResult, SweepResult
from benchmark.references import REFERENCES_VERSION, references_for
from benchmark.reporting import sections
from benchmark.reporting.crossval_report import crossval_data, crossval_sections
from benchmark.reporting.document import Report, render_markdown
from benchmark.reporting.grid import grid_rows
from benchmark.reporting.plots import (
    plot_confusion_matrix,
    plot_metric_bars,
    plot_reliability,
    plot_roc_curves,
    plot_subgroup_forest,
    plot_training_curves,
)
from benchmark.reporting.sections import METRIC_COLUMNS
from benchmark.reporting.subgroup_report import forest_plot_files, forest_points, subgroup_sections
from benchmark.reporting.verdict_report import (
    Judgement,
    comparison_rows,
    ensemble_sections,
    judge,
    plot_matrices,
    references_section,
    verdict_sections,
)
from benchmark.run_folder import (
    COMPARISONS_CSV,
    EXTERNAL_LEAKAGE_CSV,
    EXTERNAL_SKIPPED_CSV,
    GRID_CSV,
    LEADERBOARD_CSV,
    LEADERBOARD_MD,
    LEAKAGE_CSV,
    PREDICTIONS_CSV,
    REPORT_JSON,
    RUN_JSON,
    SKIPPED_CSV,
    SUBFOLDERS,
    SUBGROUPS_CSV,
    RunFolder,
    RunInfo,
    plot_file,
)
from benchmark.settings import ReportSettings
from common.files import CHECKSUMS, atomic_write_json, atomic_write_text, write_checksums
from features.data.dataset import EXTERNAL_LEAKAGE_COLUMNS, LEAKAGE_COLUMNS, Dataset, LeakageRow
from features.data.records import Label


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
    results: list[HeadResult], dataset: Dataset, run_info: RunInfo, settings: ReportSettings,
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
                    "positive": Label.of_group(positives).text,
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
                    **_provenance_columns(run_info),
                }
            )
    return rows


def _provenance_columns(run_info: RunInfo) -> dict:
    """The columns every row of leaderboard.csv and subgroups.csv carries: the run's config, git and versions."""
    return {**{f"config_{key}": value for key, value in RunConfig.display(run_info.config).items()},
            "git": run_info.git, **{f"version_{key}": value for key, value in run_info.versions.items()}}  # fmt: skip


def _scored_images(labels: np.ndarray, classes: tuple[str, ...], positives: tuple[str, ...]) -> np.ndarray:
    """Which test images a task scores (``task_truth_and_score``'s rows): multi-label, those whose value of the
    finding is known; else every one."""
    if np.ndim(labels) == 2:
        return ~np.isnan(labels[:, classes.index(positives[0])])
    return np.ones(len(labels), dtype=bool)


def subgroup_rows(
    results: list[HeadResult], dataset: Dataset, run_info: RunInfo, settings: ReportSettings
) -> tuple[list[dict], list[dict]]:
    """``subgroups.csv``'s rows (one per head, task, ``--subgroups`` attribute and subgroup: the counts, AUC,
    sensitivity and specificity at the head's validation-chosen threshold, each with its interval; the settings
    and versions) and the largest gaps per head, task and attribute. Internal test only; ([], []) without
    ``--subgroups``."""
    specs = parse_subgroups(settings.subgroups)
    if not specs:
        return [], []
    records, labels, val_labels = dataset.split("test"), dataset.labels("test"), dataset.labels("val")
    rows, gaps = [], []
    for result in results:
        for task, positives in binary_tasks(dataset.classes, dataset.multi_label).items():
            scored = _scored_images(labels, dataset.classes, positives)
            truth, score = task_truth_and_score(labels, result.probabilities["test"], dataset.classes, positives)
            val_truth, val_score = task_truth_and_score(val_labels, result.probabilities["val"], dataset.classes,
                                                        positives)  # fmt: skip
            # The leaderboard's op_threshold: chosen on validation, applied to test unchanged.
            threshold = threshold_for_sensitivity(val_truth, val_score, settings.target_sensitivity)
            for spec in specs:
                values = [record.attribute(spec.attribute) for record, kept in zip(records, scored, strict=True)
                          if kept]  # fmt: skip
                scores = score_subgroups(spec, values, truth, score, threshold, resamples=settings.bootstrap,
                                         seed=settings.seed)  # fmt: skip
                head = {**_head_columns(result), "head_id": result.head_id, "task": task, "attribute": spec.attribute}
                rows += [{**head, **asdict(one), "threshold": threshold, **_provenance_columns(run_info)}
                         for one in scores]  # fmt: skip
                found = {metric: largest_gap(scores, metric) for metric in GAP_METRICS}
                gaps.append({**head, "gaps": {metric: gap.to_json() for metric, gap in found.items() if gap}})
    return rows, gaps


def prediction_rows(
    results: list[HeadResult], dataset: Dataset, split: str = "test", key: str | None = None,
    subgroups: tuple[SubgroupSpec, ...] = (),
) -> list[dict]:  # fmt: skip
    """One row per image of ``split`` per head, with every class probability.

    ``key`` names the heads' probabilities (default: ``split``) and the rows' ``split`` column: ``external``
    for the external test set, whose records are all in its ``test`` split. ``subgroups`` adds a
    ``subgroup_<attribute>`` column per ``--subgroups`` attribute: the image's subgroup, which ``verify``
    recomputes ``subgroups.csv`` from.
    """
    records = dataset.split(split)
    rows = []
    for result in results:
        probabilities = result.probabilities[key or split]
        if dataset.multi_label:
            predicted = [Label.of_findings([n for n, p in zip(dataset.classes, probs, strict=True) if p >= 0.5]).text
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
                    "label": record.label.text,
                    **{f"{SUBGROUP_PREFIX}{spec.attribute}": spec.subgroup_of(record.attribute(spec.attribute))
                       for spec in subgroups},
                    **{f"p_{name}": float(p) for name, p in zip(dataset.classes, probs, strict=True)},
                    "predicted": guess,
                }
            )
    return rows


def build_report(
    rows: list[dict], sweep: SweepResult, dataset: Dataset, run_info: RunInfo, plots: dict[str, str],
    settings: ReportSettings, judgement: Judgement, external: Dataset | None = None,
    external_rows: list[dict] | None = None, subgroups: tuple[list[dict], list[dict]] = ([], []),
) -> Report:
    """The report as data: the verdict and a table per task, the grid, confusion matrices, plots, provenance, and
    the numbers behind them."""
    frame = pd.DataFrame(rows)
    references = references_for(dataset.counts()["test"]) if not dataset.multi_label else ()
    data = {"leaderboard": rows, "external_leaderboard": external_rows or [], **judgement.data(sweep.winners),
            "comparisons": comparison_rows(judgement.internal) + comparison_rows(judgement.external, "external"),
            "references": {"version": REFERENCES_VERSION, "rows": [ref.to_json() for ref in references]}}  # fmt: skip
    out = [*sections.data_section(dataset), *sections.selection_section(sweep, settings, dataset.multi_label),
           *sections.task_tables(frame, dataset, settings.sort_metric, judgement.internal),
           *verdict_sections(judgement.internal, _titled(plots, "Paired ΔAUC", judgement.internal)),
           *ensemble_sections(judgement.ensemble_best, judgement.ensemble_members, judgement.internal),
           *references_section(references, frame)]  # fmt: skip
    if subgroups[0]:
        data["subgroups"] = {"rows": subgroups[0], "gaps": subgroups[1]}
        out += subgroup_sections(*subgroups, list(binary_tasks(dataset.classes, dataset.multi_label)), settings,
                                 plots)  # fmt: skip
    if external is not None and external_rows:
        out += sections.external_sections(frame, pd.DataFrame(external_rows), external, dataset)
        if judgement.external:
            out += verdict_sections(judgement.external, _titled(plots, "Paired ΔAUC", judgement.external, "external"),
                                    "external", key="external_verdict")  # fmt: skip
    out += sections.validation_sections(frame, dataset)
    out += sections.probe_section(sweep.winners, dataset, settings)
    out += sections.operating_point_sections(frame, dataset, settings)
    out += sections.calibration_section(frame, dataset, plots)
    out += sections.plots_section(plots, settings.plots)
    if dataset.multi_label:
        out += sections.macro_auc_section(frame, pd.DataFrame(external_rows or []))
    else:
        out += sections.confusion_section(sweep.winners, dataset)
    if sweep.crossval is not None:
        summary = summarize(sweep.crossval)
        out += crossval_sections(summary, settings.plots)
        data["crossval"] = crossval_data(summary)
    out += sections.grid_section(sweep, dataset, settings.select_by)
    out += sections.provenance_section(run_info)
    return Report("cxr-bench leaderboard", sections.banners(run_info, dataset, settings), sections.preamble(run_info),
                  out, data)  # fmt: skip



def plot_files(tasks: list[str], models: list[str], confusion: bool = True) -> dict[str, str]:
    """Title -> path under the results folder of every plot ``write_reports`` draws, in the report's order.

    The one list of them: the report writes these files and ``cxr-bench serve`` shows them. A multi-label
    run (``confusion`` False) has no confusion matrix.
    """
    files = {"Training curves": plot_file("training_curves.png"),
             "Test metrics per backbone and task": plot_file("metric_bars.png")}  # fmt: skip
    for task in tasks:
        files[f"ROC {task}"] = plot_file(f"roc_{task}.png")
        files[f"Reliability {task}"] = plot_file(f"reliability_{task}.png")
    return files | {f"Confusion matrix {name}": plot_file(f"confusion_{name}.png") for name in models if confusion}


def _plots(results: RunFolder, rows: list[dict], sweep: SweepResult, dataset: Dataset) -> dict[str, str]:
    """Draw the report's PNGs into the run's ``plots/``; return title -> relative path."""
    results.plots.mkdir(parents=True, exist_ok=True)
    first = {}
    for winner in sweep.winners:
        first.setdefault(winner.backbone, winner)
    made = plot_files(list(binary_tasks(dataset.classes, dataset.multi_label)), list(first), not dataset.multi_label)
    path = {title: results.file(relative) for title, relative in made.items()}
    # A probe is fitted in one go: it has no curve to draw.
    curves = [w for w in first.values() if w.settings.kind == "keras"] or [
        w for w in first.values() if w.settings.kind != "ensemble"]
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


def _forest_plots(results: RunFolder, rows: list[dict], dataset: Dataset) -> dict[str, str]:
    """Draw each task's forest plot of subgroup AUCs (none without ``--subgroups``); return title -> path."""
    if not rows:
        return {}
    made = forest_plot_files(list(binary_tasks(dataset.classes, dataset.multi_label)))
    for title, relative in made.items():
        task = title.removeprefix("Subgroup AUC ")
        plot_subgroup_forest(forest_points(rows, task), results.file(relative), f"AUC per subgroup, {task} (test)")
    return made


def _write_subgroups(results: RunFolder, rows: list[dict]) -> bool:
    """``subgroups.csv`` where the run has subgroups (True); else none, so an earlier run's file is not taken for
    this run's (SHA256SUMS, written after, lists only what this run wrote)."""
    path = results.file(SUBGROUPS_CSV)
    if rows:
        atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))
    else:
        path.unlink(missing_ok=True)
    return bool(rows)


def _titled(plots: dict[str, str], prefix: str, verdicts: dict, eval_set: str = "internal") -> dict[str, str]:
    """The plots whose title starts with ``prefix``, one per task of ``verdicts``, in their order (none where the run
    drew no plots)."""
    suffix = "" if eval_set == "internal" else f" {eval_set}"
    titles = [f"{prefix} {task}{suffix}" for task in verdicts]
    return {title: plots[title] for title in titles} if plots else {}


def _leakage_csv(rows: list[LeakageRow], columns: tuple[str, ...]) -> str:
    """``rows`` as CSV text under ``columns`` (the header alone where there are none)."""
    return pd.DataFrame([row.cells(columns) for row in rows], columns=list(columns)).to_csv(index=False)


def _skipped_csv(dataset: Dataset) -> str:
    """The files ``dataset`` left out as CSV text: path and reason (the header alone where there are none)."""
    return pd.DataFrame([(skip.path, skip.reason) for skip in dataset.skipped], columns=["path", "reason"]).to_csv(
        index=False
    )


def write_data_report(results: RunFolder, dataset: Dataset) -> dict[str, Path]:
    """Write ``skipped.csv`` (every file left out, with why) and ``leakage.csv``; return their paths by name.

    Written before any extraction, so they are there even when the run stops on bad data.
    """
    paths = {name: results.file(name) for name in (SKIPPED_CSV, LEAKAGE_CSV)}
    atomic_write_text(paths[SKIPPED_CSV], _skipped_csv(dataset))
    atomic_write_text(paths[LEAKAGE_CSV], _leakage_csv(dataset.leakage, LEAKAGE_COLUMNS))
    return paths


def write_external_skipped(results: RunFolder, external: Dataset) -> Path:
    """Write ``external_skipped.csv`` (every file of the external test set left out, with why) and
    ``external_leakage.csv`` (its images that are also in the internal data); return the first's path."""
    path = results.file(EXTERNAL_SKIPPED_CSV)
    atomic_write_text(path, _skipped_csv(external))
    atomic_write_text(results.file(EXTERNAL_LEAKAGE_CSV),
                      _leakage_csv(external.leakage, EXTERNAL_LEAKAGE_COLUMNS))  # fmt: skip
    return path


def write_reports(
    results: RunFolder, sweep: SweepResult, dataset: Dataset, run_info: RunInfo, settings: ReportSettings,
    external: Dataset | None = None,
) -> dict[str, Path]:
    """Write every report file of a run into ``results``; return their paths by name.

    With an ``external`` test set, ``leaderboard.csv`` gains an ``eval_set`` column (internal, external)
    and its rows, ``predictions.csv`` its images (split ``external``), ``leaderboard.md`` its section.
    """
    results.root.mkdir(parents=True, exist_ok=True)
    judgement = judge(sweep.winners, dataset, settings, external)
    rows = leaderboard_rows(sweep.winners, dataset, run_info, settings)
    scored = [w for w in sweep.winners if "external" in w.probabilities]
    external_rows = leaderboard_rows(scored, dataset, run_info, settings, external) if external else []
    subgroups = subgroup_rows(sweep.winners, dataset, run_info, settings)
    plots = {}
    if settings.plots:
        plots = _plots(results, rows, sweep, dataset) if sweep.winners else {}
        plots |= plot_matrices(results, judgement.internal) | plot_matrices(results, judgement.external, "external")
        plots |= _forest_plots(results, subgroups[0], dataset)
    paths = {name: results.file(name) for name in (LEADERBOARD_CSV, PREDICTIONS_CSV, GRID_CSV, LEADERBOARD_MD,
                                                    REPORT_JSON, COMPARISONS_CSV, RUN_JSON)}  # fmt: skip
    board = [dict(row, eval_set="internal") for row in rows] + [dict(row, eval_set="external") for row in
                                                                   external_rows] if external else rows  # fmt: skip
    atomic_write_text(paths[LEADERBOARD_CSV], pd.DataFrame(board).to_csv(index=False))
    predictions = prediction_rows(sweep.winners, dataset, subgroups=parse_subgroups(settings.subgroups))
    predictions += prediction_rows(scored, external, key="external") if external else []
    atomic_write_text(paths[PREDICTIONS_CSV], pd.DataFrame(predictions).to_csv(index=False))
    grid = grid_rows(sweep.points, dataset.classes, settings.select_by, dataset.multi_label)
    atomic_write_text(paths[GRID_CSV], pd.DataFrame(grid).to_csv(index=False))
    report = build_report(rows, sweep, dataset, run_info, plots, settings, judgement, external, external_rows,
                          subgroups)  # fmt: skip
    if _write_subgroups(results, subgroups[0]):
        paths[SUBGROUPS_CSV] = results.file(SUBGROUPS_CSV)
    columns = list(report.data["comparisons"][0]) if report.data["comparisons"] else ["eval_set", "task", "a", "b"]
    atomic_write_text(paths[COMPARISONS_CSV], pd.DataFrame(report.data["comparisons"], columns=columns)
                      .to_csv(index=False))  # fmt: skip
    atomic_write_json(paths[REPORT_JSON], report.to_json(), default=float)
    atomic_write_text(paths[LEADERBOARD_MD], render_markdown(report))
    atomic_write_json(paths[RUN_JSON], run_info.to_json(), default=str)
    paths |= write_data_report(results, dataset)
    # Last: predict, serve and verify check what they read against it, so a changed byte is named, never used.
    paths[CHECKSUMS] = write_checksums(results.root, SUBFOLDERS)
    return paths
