"""What the run page reads from a results folder: checked once at start, read only, never written.

``load_run`` checks that every file the page needs is there (``MissingFilesError``
names the missing ones), then reads the leaderboard, the data report, the
provenance and the list of plots into a ``RunView`` that the templates render.
The banners, the data counts, the selection rule, the verdict and the
cross-validation are rendered from ``report.json``, the same report data
``leaderboard.md`` was rendered from: the page never parses Markdown.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from markupsafe import Markup, escape

from benchmark.config import RunConfig
from benchmark.evaluation.verdict import ENSEMBLE
from benchmark.predict import ensemble_head_ids, read_run
from benchmark.reporting.document import Block, Report
from benchmark.reporting.report import METRIC_COLUMNS, plot_files
from benchmark.run_folder import (
    LEADERBOARD_CSV,
    LEAKAGE_CSV,
    PLOTS,
    READ_FILES,
    REPORT_JSON,
    RUN_JSON,
    SKIPPED_CSV,
    RunFolder,
    RunInfo,
)
from benchmark.settings import HeadSettings

# The report's sections the page shows as they are (each with its sub-sections), by key.
PAGE_SECTIONS = ("verdict", "ensemble", "references", "crossval", "subgroups", "selection", "data")
# Long lists (a messy data folder can skip thousands of files) are cut on the page; the CSV has them all.
MAX_LISTED = 500
# The validation columns beside test: those the Markdown's "Validation beside test" shows.
VAL_METRICS = ("auc", "sensitivity", "specificity", "f1")
# Column headers: short, so that a task's table fits a laptop screen.
SHORT = {"sensitivity": "sens", "specificity": "spec", "accuracy": "acc", "precision": "prec", "f1": "F1", "auc": "AUC"}
# The operating-point and calibration columns of the leaderboard table, with their headers.
OPERATING_COLUMNS = {
    "op_threshold": "threshold",
    "op_val_sensitivity": "val sens",
    "op_test_sensitivity": "test sens",
    "op_test_specificity": "test spec",
    "ece": "ECE",
}


class MissingFilesError(FileNotFoundError):
    """The results folder lacks files the page needs; ``missing`` lists them, relative to the folder."""

    def __init__(self, results_dir: Path, missing: list[str]):
        self.missing = missing
        super().__init__(f"{results_dir} is not a finished run: missing {', '.join(missing)}")


@dataclass(frozen=True)
class Plot:
    """One of the run's PNGs: its title, its name under ``plots/``, whether the file is there."""

    title: str
    name: str
    present: bool


@dataclass(frozen=True)
class RunView:
    """Everything the run page shows, read once when the server starts."""

    results_dir: Path
    run: RunInfo
    report: Report
    board: pd.DataFrame
    banners: list[Markup]
    sections: dict[str, Markup]
    skipped: pd.DataFrame
    leakage: pd.DataFrame
    plots: list[Plot]

    @property
    def config(self) -> RunConfig:
        """The run's settings, as ``run.json`` records them."""
        return RunConfig.from_json(self.run.config)

    @property
    def backbones(self) -> list[str]:
        """The models a prediction can use, in leaderboard order: heads, probes, fine-tuned models."""
        return list(dict.fromkeys(self.board["backbone"]))

    @property
    def tasks(self) -> dict[str, str]:
        """Task name -> its positive classes (``bacterial+viral``), in leaderboard order."""
        return dict(zip(self.board["task"], self.board["positive"], strict=True))

    def plot(self, name: str) -> Plot | None:
        """The known plot called ``name``, or None: only these are ever served from ``plots/``."""
        return next((plot for plot in self.plots if plot.name == name), None)


def checkpoint_files(board: pd.DataFrame) -> list[str]:
    """The saved models a prediction loads, one set per selected head, relative to the results folder; the
    ensemble's are its members'."""
    names = dict(zip(board["head_id"], board["backbone"], strict=True))
    files = []
    for backbone, head_id in dict.fromkeys(zip(board["backbone"], board["head_id"], strict=True)):
        if backbone == ENSEMBLE:
            # A member missing from the board is taken for a plain head: its file is then listed, checked, named.
            files += [file for member in ensemble_head_ids(head_id)
                      for file in RunFolder.model_files(names.get(member, ""), member)]  # fmt: skip
        else:
            files += RunFolder.model_files(backbone, head_id)
    return list(dict.fromkeys(files))


def missing_files(results_dir: Path) -> list[str]:
    """The files the page needs that ``results_dir`` lacks (the run's reports, then the selected heads' models)."""
    missing = [name for name in READ_FILES if not (results_dir / name).is_file()]
    if LEADERBOARD_CSV not in missing:
        board = pd.read_csv(results_dir / LEADERBOARD_CSV)
        missing += [name for name in checkpoint_files(board) if not (results_dir / name).is_file()]
    return missing


def expected_plots(results_dir: Path, board: pd.DataFrame, report: Report | None = None) -> list[Plot]:
    """The PNGs ``write_reports`` draws for this leaderboard, and every other figure of the ``report`` (the
    verdict's matrices, the cross-validation's diagrams), each marked present or not."""
    # A multi-label run's leaderboard has a macro_auc column, and its report no confusion matrices.
    files = plot_files(list(dict.fromkeys(board["task"])), list(dict.fromkeys(board["backbone"])),
                       confusion="macro_auc" not in board)  # fmt: skip
    for one in report.sections if report else ():
        files |= {
            block.text: block.path
            for block in one.blocks
            if block.kind == "figure" and block.path.startswith(f"{PLOTS}/") and block.path not in files.values()
        }
    return [Plot(title, Path(relative).name, (results_dir / relative).is_file()) for title, relative in files.items()]


def read_report(path: Path) -> Report:
    """The run's ``report.json``; ``ValueError`` naming the file when it is damaged or of another format."""
    try:
        return Report.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{path} is damaged or not a cxr-bench report ({error}); run the run's command again "
            f"(recorded in {RUN_JSON}) to write it anew: finished work is reused"
        ) from error


def load_run(results_dir: str | Path) -> RunView:
    """Check and read a finished run's folder; ``MissingFilesError`` (naming the files) if it is incomplete."""
    results_dir = Path(results_dir).resolve()
    if not results_dir.is_dir():
        raise MissingFilesError(results_dir, ["the folder itself"])
    if missing := missing_files(results_dir):
        raise MissingFilesError(results_dir, missing)
    folder = RunFolder(results_dir)
    board = pd.read_csv(folder.file(LEADERBOARD_CSV))
    if "eval_set" in board:  # the page shows the internal test; an external test set's rows are in leaderboard.md
        board = board[board["eval_set"] == "internal"].reset_index(drop=True)
    report = read_report(folder.file(REPORT_JSON))
    run = read_run(results_dir)
    return RunView(
        results_dir=results_dir,
        run=run,
        report=report,
        board=board,
        banners=[inline_markdown(banner) for banner in report.banners],
        sections={key: section_html(report, key) for key in PAGE_SECTIONS if report.section(key)},
        skipped=pd.read_csv(folder.file(SKIPPED_CSV), keep_default_na=False),
        leakage=pd.read_csv(folder.file(LEAKAGE_CSV), keep_default_na=False),
        # A run given --no-plots drew none: none is missing (the report's Plots section says so).
        plots=expected_plots(results_dir, board, report) if run.config.get("plots", True) else [],
    )


def inline_markdown(text: str) -> Markup:
    """``text`` escaped, with the report's inline Markdown (``**bold**``, ```code```) as HTML."""
    html = str(escape(text))
    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html)
    return Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", html))


def section_html(report: Report, key: str) -> Markup:
    """The report's section ``key`` and its sub-sections as HTML (the section's own title left to the page)."""
    out = []
    for index, one in enumerate(report.section(key)):
        if index:
            out.append(f"<h{one.level}>{inline_markdown(one.title)}</h{one.level}>")
        out += [block_html(block) for block in one.blocks]
    return Markup("\n".join(out))


def block_html(block: Block) -> str:
    """One block of the report as HTML; its text escaped, with the report's two inline marks."""
    if block.kind == "paragraph":
        return f"<p>{inline_markdown(block.text)}</p>"
    if block.kind == "bullets":
        return "<ul>" + "".join(f"<li>{inline_markdown(item)}</li>" for item in block.items) + "</ul>"
    if block.kind == "figure":
        name = Path(block.path).name
        return (f'<figure data-plot="{escape(name)}"><img src="plots/{escape(name)}" alt="{escape(block.text)}" '
                f'loading="lazy"><figcaption>{escape(block.text)}</figcaption></figure>')  # fmt: skip
    head = "".join(f"<th>{inline_markdown(cell)}</th>" for cell in block.headers)
    body = "".join("<tr>" + "".join(f"<td>{inline_markdown(cell)}</td>" for cell in row) + "</tr>"
                   for row in block.rows)  # fmt: skip
    return f'<div class="scroll"><table class="plain"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def number(value) -> str:
    """A leaderboard number as the Markdown shows it: 3 decimals, ``n/a`` for a missing one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.3f}"


def sort_value(value) -> str:
    """The exact value a cell sorts by (and a test compares with ``leaderboard.csv``); empty when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(value))


def settings_text(row: pd.Series) -> str:
    """A head's size and settings in words, as ``predict`` describes them; the ensemble's members."""
    if row["kind"] == ENSEMBLE:
        return str(row["weights"])  # "mean of A, B, C"
    settings = HeadSettings(kind=row["kind"], lr=row["lr"], dropout=row["dropout"], l2=row["l2"],
                            lr_schedule=row["lr_schedule"])  # fmt: skip
    return f"{row['image_size']} px, {settings.describe()}, seed {row['seed']}"


def task_rows(view: RunView, task: str) -> list[pd.Series]:
    """The leaderboard rows of ``task``, in the Markdown's order: the run's sort metric, then sensitivity."""
    metric = view.config.sort_metric
    rows = view.board[view.board["task"] == task]
    rows = rows.sort_values([metric, "sensitivity"], ascending=False, kind="mergesort", na_position="last")
    return [row for _, row in rows.iterrows()]


def interval(row: pd.Series, metric: str) -> str:
    """The bootstrap 95% interval of ``metric`` as ``0.80–0.93``, or "" where the run computed none."""
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return ""
    return f"{low:.2f}–{high:.2f}"


# The verdict's sections, shown under the leaderboard with these titles.
EXTRA_SECTIONS = {
    "verdict": "Which heads the test set tells apart",
    "ensemble": "The ensemble of tied heads",
    "crossval": "Cross-validation",
    "references": "Published results on the same test set",
    "subgroups": "Subgroups: who each head works for",
}


def verdict_mark(view: RunView, task: str, backbone: str) -> str:
    """``best``, ``tied with best`` or ``worse`` on ``task`` by the run's paired tests; "" for runs without them."""
    verdict = view.report.data.get("verdict", {}).get(task)
    if not verdict or backbone not in verdict["heads"]:
        return ""
    if backbone == verdict["best"]:
        return "best"
    return "tied with best" if backbone in verdict["tied"] else "worse"


def template_helpers() -> dict:
    """The functions and constants the templates call."""
    return {"number": number, "sort_value": sort_value, "settings_text": settings_text, "task_rows": task_rows,
            "interval": interval, "verdict_mark": verdict_mark, "EXTRA_SECTIONS": EXTRA_SECTIONS,
            "METRICS": METRIC_COLUMNS, "VAL_METRICS": VAL_METRICS,
            "OPERATING": OPERATING_COLUMNS, "SHORT": SHORT, "MAX_LISTED": MAX_LISTED,
            "display": RunConfig.display}  # fmt: skip
