"""The cross-validation's outputs: ``cv_folds.csv``, ``cv_summary.csv``, a critical-difference diagram per task,
and its report sections (``crossval_sections``), which the leaderboard and the web page render."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.evaluation.crossval_stats import ALPHA, CrossValSummary, TaskComparison, summarize
from benchmark.records import CROSSVAL_COLUMNS, CrossValResult
from benchmark.reporting.document import Section, bullets, figure, fmt, paragraph
from benchmark.reporting.document import table as table_block
from benchmark.reporting.plots import plot_critical_difference
from benchmark.run_folder import CV_FOLDS_CSV, CV_SUMMARY_CSV, RunFolder, plot_file
from common.files import atomic_write_text


def cd_plot_name(task: str) -> str:
    """Where a task's critical-difference diagram goes, relative to the results folder."""
    return plot_file(f"cd_{task}.png")


def write_crossval(results: RunFolder, result: CrossValResult, plots: bool = True) -> dict[str, Path]:
    """Write the per-fold rows, the per-model summary and (with ``plots``) each task's critical-difference diagram;
    their paths."""
    summary = summarize(result)
    paths = {name: results.file(name) for name in (CV_FOLDS_CSV, CV_SUMMARY_CSV)}
    folds = pd.DataFrame(result.rows, columns=list(CROSSVAL_COLUMNS))
    atomic_write_text(paths[CV_FOLDS_CSV], folds.to_csv(index=False))
    atomic_write_text(paths[CV_SUMMARY_CSV], summary.table.to_csv(index=False))
    for task, comparison in summary.comparisons.items() if plots else ():
        if comparison.nemenyi is not None:
            name = cd_plot_name(task)
            paths[name] = plot_critical_difference(
                comparison.mean_ranks, comparison.nemenyi, results.file(name), cd=comparison.cd, alpha=ALPHA,
                title=f"{task}: mean rank of held-out AUC over {comparison.blocks} folds (1 = best)\n"
                f"bars join the models Nemenyi cannot tell apart at α {ALPHA:g}",
            )  # fmt: skip
    return paths


def _pairs_apart(pvalues: pd.DataFrame | None) -> str:
    """Which pairs of models a p-value matrix tells apart at ``ALPHA``, in words (the shorter list named)."""
    if pvalues is None:
        return "no pair to compare"
    names = list(pvalues.index)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    apart = [f"{a} and {b}" for a, b in pairs if pvalues.loc[a, b] < ALPHA]
    tied = [f"{a} and {b}" for a, b in pairs if pvalues.loc[a, b] >= ALPHA]
    if not apart:
        return f"no pair told apart (of {len(pairs)})"
    if not tied:
        return f"every pair told apart (of {len(pairs)})"
    # Name the shorter list: with 8 models, 28 pairs in words would hide the few that matter.
    if len(apart) <= len(tied):
        return f"{len(apart)} of {len(pairs)} pairs told apart: " + "; ".join(apart)
    return f"{len(apart)} of {len(pairs)} pairs told apart; not: " + "; ".join(tied)


def _task_section(table: pd.DataFrame, comparison: TaskComparison, plots: bool) -> Section:
    rows = table[table["task"] == comparison.task].sort_values("mean_rank")
    cells = [[row.backbone, f"{fmt(row.mean)} ± {fmt(row.sd)}", f"{fmt(row.ci_low)} to {fmt(row.ci_high)}",
              fmt(row.mean_rank, 2), fmt(row.test_auc)] for row in rows.itertuples()]  # fmt: skip
    headers = ["model", "held-out AUC (mean ± sd)", "95% interval", "mean rank", "test AUC (mean)"]
    blocks = [table_block(headers, cells)]
    if comparison.friedman_p is None:
        blocks.append(paragraph(f"Friedman: not computed ({comparison.note})."))
    else:
        blocks.append(paragraph(f"Friedman χ² = {comparison.friedman_statistic:.2f} over {len(comparison.mean_ranks)} "
                                f"models and {comparison.blocks} folds, p = {comparison.friedman_p:.3g}"
                                f"{f' ({comparison.note})' if comparison.note else ''}."))  # fmt: skip
    if comparison.nemenyi is not None:
        blocks += [bullets([f"Nemenyi (critical difference {comparison.cd:.2f} in mean rank), α {ALPHA:g}: "
                            f"{_pairs_apart(comparison.nemenyi)}.",
                            f"Pairwise Wilcoxon signed-rank, Holm-adjusted, α {ALPHA:g}: "
                            f"{_pairs_apart(comparison.wilcoxon_holm)}."])]
        blocks += [figure(f"Critical difference {comparison.task}", cd_plot_name(comparison.task))] if plots else []
    return Section(comparison.task, blocks, 3, f"crossval/{comparison.task}")


def crossval_sections(summary: CrossValSummary, plots: bool = True) -> list[Section]:
    """The report's cross-validation section: a table per task, its Friedman and post-hoc tests (and, with ``plots``,
    its critical-difference diagram), the cost."""
    folds, repeats = summary.folds, summary.repeats
    text = (f"The train + validation pool was cut into {folds} class-stratified folds of whole patients, {repeats} "
            f"time{'s' if repeats > 1 else ''}, each with another seed. In each fold the whole head grid was trained, "
            "early-stopped and selected on an inner validation carve of the fold's training part; the selected head "
            "of each model was scored on the held-out fold, and on the test split, which chose nothing. Rank 1 is the "
            "best held-out AUC of a fold. The 95% interval is the Nadeau-Bengio corrected resampled t interval: folds "
            "share training images, so a plain t interval over them would be too narrow; the tests below treat folds "
            "as independent and share that optimism. Every fold's numbers: `cv_folds.csv`; the summary: "
            "`cv_summary.csv`.")  # fmt: skip
    head = Section(f"Cross-validation ({folds} folds × {repeats} repeats, patient-grouped)",
                   [paragraph(text), paragraph(f"Cost: {summary.trained} heads trained by this run, "
                                               f"{summary.seconds:.0f} s.")], key="crossval")  # fmt: skip
    return [head, *(_task_section(summary.table, comparison, plots) for comparison in summary.comparisons.values())]


def crossval_data(summary: CrossValSummary) -> dict:
    """What ``report.json`` keeps of the cross-validation: the summary rows and each task's tests."""
    return {"folds": summary.folds, "repeats": summary.repeats, "seconds": summary.seconds,
            "trained": summary.trained, "summary": summary.table.to_dict("records"),
            "tests": {task: {"friedman_statistic": c.friedman_statistic, "friedman_p": c.friedman_p,
                             "critical_difference": c.cd, "note": c.note, "mean_ranks": dict(c.mean_ranks)}
                      for task, c in summary.comparisons.items()}}  # fmt: skip
