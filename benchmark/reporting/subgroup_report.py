"""The leaderboard's "Subgroups" section, as data (``benchmark.reporting.document``), from ``subgroups.csv``'s rows
and the gaps between subgroups (``benchmark.reporting.report.subgroup_rows``), and its forest plot of AUCs."""

from __future__ import annotations

import math
from collections.abc import Iterable

from benchmark.evaluation.subgroups import GAP_METRICS, MIN_CASES, SUBGROUP_METRICS
from benchmark.reporting.document import Section, bullets, figure, fmt, paragraph, table
from benchmark.run_folder import plot_file
from benchmark.settings import ReportSettings

_HEADERS = ["model", "attribute", "subgroup", "n", "pos / neg", "AUC (95% CI)", "sens (95% CI)", "spec (95% CI)",
            "note"]  # fmt: skip
_NAMES = {"auc": "AUC", "sensitivity": "sensitivity", "specificity": "specificity"}


def model_label(row: dict, several_seeds: bool) -> str:
    """The model a subgroup row is about: its backbone (with its seed where a backbone has several heads)."""
    return f"{row['backbone']} seed {row['seed']}" if several_seeds else str(row["backbone"])


def _several_seeds(rows: Iterable[dict]) -> bool:
    """Whether some backbone has more than one selected head (``--seeds`` above 1)."""
    heads = {(row["backbone"], row["head_id"]) for row in rows}
    return len(heads) > len({backbone for backbone, _ in heads})


def _with_interval(row: dict, metric: str) -> str:
    """``0.912 (0.850–0.961)``; the value alone without an interval; ``—`` when not scored."""
    value, low, high = row[metric], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
    if math.isnan(value):
        return "—"
    return fmt(value) if math.isnan(low) else f"{fmt(value)} ({fmt(low)}–{fmt(high)})"


def gap_text(gap: dict | None, metric: str) -> str:
    """``**AUC gap 0.123**: F 0.812 vs M 0.935`` (bold: the report's highlight), or why there is none."""
    if gap is None:
        return f"{_NAMES[metric]} gap: n/a (fewer than two recorded subgroups can be scored)"
    return (f"**{_NAMES[metric]} gap {fmt(gap['gap'])}**: {gap['low']} {fmt(gap['low_value'])} vs "
            f"{gap['high']} {fmt(gap['high_value'])}")  # fmt: skip


def subgroup_sections(rows: list[dict], gaps: list[dict], tasks: list[str], settings: ReportSettings,
                      plots: dict[str, str]) -> list[Section]:  # fmt: skip
    """"Subgroups": per task, each selected head's metrics per subgroup with intervals, and the largest gaps."""
    if not rows:
        return []
    intervals = (f"95% bootstrap intervals over each subgroup's own images ({settings.bootstrap} resamples)"
                 if settings.bootstrap else "no intervals (--bootstrap 0)")  # fmt: skip
    text = (f"Each selected head on the **test** split, per subgroup of `--subgroups {' '.join(settings.subgroups)}`"
            f": AUC, and sensitivity and specificity at the head's operating point (the threshold chosen on "
            f"validation for sensitivity {settings.target_sensitivity:g}, never on test), with {intervals}. A "
            f"subgroup with fewer than {MIN_CASES} positives (or negatives) is listed without the rates it cannot "
            "support, saying so. Images whose attribute is not recorded form the `not recorded` row, which is left "
            "out of the gaps: the largest gap is max − min over the recorded subgroups that can be scored, in "
            "bold, naming the two. Every row is in `subgroups.csv`.")  # fmt: skip
    pictures = [figure(title, path) for title, path in plots.items() if title.startswith("Subgroup AUC")]
    out = [Section("Subgroups", [paragraph(text), *pictures], key="subgroups")]
    several = _several_seeds(rows)
    for task in tasks:
        mine = [row for row in rows if row["task"] == task]
        body = [[model_label(row, several), row["attribute"], row["subgroup"], row["n"],
                 f"{row['positives']} / {row['negatives']}", *[_with_interval(row, m) for m in SUBGROUP_METRICS],
                 row["too_small"]] for row in mine]  # fmt: skip
        lines = [f"{model_label(gap, several)}, {gap['attribute']}: "
                 + "; ".join(gap_text(gap["gaps"].get(metric), metric) for metric in GAP_METRICS)
                 for gap in gaps if gap["task"] == task]  # fmt: skip
        out.append(Section(task, [table(_HEADERS, body), bullets(lines)], 3, f"subgroups/{task}"))
    return out


def forest_plot_files(tasks: list[str]) -> dict[str, str]:
    """Title -> path under the results folder of each task's forest plot of subgroup AUCs."""
    return {f"Subgroup AUC {task}": plot_file(f"subgroups_{task}.png") for task in tasks}


def forest_points(rows: list[dict], task: str) -> list[tuple[str, float, float, float]]:
    """(label, AUC, interval low, interval high) of every model and subgroup of ``task`` that has an AUC."""
    several = _several_seeds(rows)
    return [(f"{model_label(row, several)} · {row['attribute']} {row['subgroup']} (n={row['n']})", row["auc"],
             row["auc_ci_low"], row["auc_ci_high"])
            for row in rows if row["task"] == task and not math.isnan(row["auc"])]  # fmt: skip
