"""The leaderboard's sections, built as data (``benchmark.reporting.document``) from a run's rows and results.

Each builder returns ``Section`` objects; ``leaderboard.md`` and the web page
are renderings of them. Numbers are formatted here, once, by ``document.fmt``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmark.config import RunConfig
from benchmark.evaluation.metrics import (
    binary_tasks,
    multiclass_accuracy,
    multiclass_confusion,
    paired_auc_difference,
    task_truth_and_score,
)
from benchmark.records import HeadResult, SweepResult
from benchmark.reporting.document import Block, Section, bullets, figure, fmt, paragraph, table
from benchmark.reporting.grid import grid_rows
from benchmark.reporting.verdict_report import sentence
from benchmark.run_folder import RunInfo, is_finetuned
from benchmark.settings import GridKey, ReportSettings, model_name
from features.data.dataset import Dataset
from features.settings import ComputePlan

METRIC_COLUMNS = ("sensitivity", "specificity", "accuracy", "precision", "f1", "auc")
SETTING_HEADERS = ["size", "head", "lr", "dropout", "l2", "schedule"]


def setting_cells(row) -> list[str]:
    """A head's settings as table cells; learning rates and penalties in ``g`` format, so 1e-4 stays legible."""
    if row["kind"] == "logreg":
        return [str(row["image_size"]), "logreg (L-BFGS)", "—", "—", f"{row['l2']:g}", "—"]
    if row["kind"] == "ensemble":
        return ["mixed" if not row["image_size"] else str(row["image_size"]), "ensemble (mean)", "—", "—", "—", "—"]
    return [str(row["image_size"]), "Adam", f"{row['lr']:g}", f"{row['dropout']:g}", f"{row['l2']:g}",
            row["lr_schedule"]]  # fmt: skip


def banners(run_info: RunInfo, dataset: Dataset, settings: ReportSettings) -> list[str]:
    """The warnings a reader must see before any number: leakage into test, phantom data, random weights."""
    lines = []
    # Only copies the run kept: after --leakage drop the train/val copies are gone and test is clean.
    kept = [r for r in dataset.leakage if r.action == "kept"]
    leaked_to_test = {r.sha256 for r in kept if r.split == "test"} & {r.sha256 for r in kept if r.split != "test"}
    if leaked_to_test:
        lines.append(
            f"**Leakage: {len(leaked_to_test)} test image(s) also appear in train or validation** (same "
            "bytes; listed in `leakage.csv`). Test scores may be optimistic. `--leakage drop` removes the copies."
        )
    if run_info.phantom:
        lines.append(
            "**SYNTHETIC PHANTOM DATA: THESE NUMBERS ARE NOT MEDICAL.** The images are generated "
            "drawings of normal lungs, focal consolidation and a diffuse interstitial pattern, made "
            "to show the pipeline working offline. Point `--data` at real radiographs for real numbers."
        )
    if settings.random_init:
        lines.append(
            "**Weights: none (random initialisation).** The backbones never saw ImageNet, so this "
            "measures the pipeline, not ImageNet transfer. Use `--weights imagenet` (or a weights "
            "folder) for the real comparison."
        )
    if settings.limit_per_class:
        lines.append(f"Subset run: at most {settings.limit_per_class} images per class and split.")
    return lines


def preamble(run_info: RunInfo) -> list[Block]:
    """Who made the run, with what command, and what the backbones computed in."""
    return [paragraph(f"Generated {run_info.timestamp} by cxr-bench `{run_info.git}` on {run_info.machine}."),
            paragraph(f"Command: `{run_info.command}`"), *extraction_blocks(run_info.compute)]  # fmt: skip


def mean_std(values: pd.Series) -> str:
    """Mean ± population std of a column (the value alone for one row; ``n/a`` when all missing)."""
    values = values.astype(float)
    if values.isna().all():
        return "n/a"
    if len(values) == 1:
        return fmt(values.iloc[0])
    return f"{values.mean():.3f} ± {values.std(ddof=0):.3f}"


def _cell(members: pd.DataFrame, metric: str) -> str:
    """Mean ± std over seeds; with one seed, the value and its bootstrap 95% interval."""
    text = mean_std(members[metric])
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    if len(members) == 1 and low in members and not math.isnan(members[low].iloc[0]):
        text += f" ({members[low].iloc[0]:.2f}–{members[high].iloc[0]:.2f})"
    return text


def summary(frame: pd.DataFrame, sort_metric: str) -> pd.DataFrame:
    """Test metrics per selected grid point, mean and standard deviation over its seeds."""
    keys = list(GridKey._fields)
    grouped = frame.groupby(keys, sort=False)
    out = grouped[list(METRIC_COLUMNS)].mean().reset_index()
    out["seeds"] = grouped.size().to_numpy()
    for metric in METRIC_COLUMNS:
        out[f"{metric}_std"] = grouped[metric].std(ddof=0).to_numpy()
    return out.sort_values([sort_metric, "sensitivity"], ascending=False)


def task_tables(frame: pd.DataFrame, dataset: Dataset, sort_metric: str, verdicts: dict | None = None) -> list[Section]:
    """The leaderboard proper: per task, the selected heads ranked by their test ``sort_metric``.

    With ``verdicts`` (task -> ``TaskVerdict``), a column marks the heads the test set cannot tell from the
    best, and a sentence under the table says how many pairs it tells apart.
    """
    out = [Section("Best per backbone: test results per task", key="tasks")]
    for task, positives in binary_tasks(dataset.classes, dataset.multi_label).items():
        verdict = (verdicts or {}).get(task)
        body = []
        for rank, (_, row) in enumerate(summary(frame[frame["task"] == task], sort_metric).iterrows(), start=1):
            members = frame[(frame["task"] == task) & (frame["backbone"] == row["backbone"])]
            tied = [("**best**" if row["backbone"] == verdict.best else "tied" if row["backbone"] in verdict.tied
                     else "worse")] if verdict else []  # fmt: skip
            body.append([rank, row["backbone"], *tied, *setting_cells(row), row["seeds"]]
                        + [_cell(members, m) for m in METRIC_COLUMNS])  # fmt: skip
        headers = ["#", "backbone", *(["vs best"] if verdict else []), *SETTING_HEADERS, "seeds", *METRIC_COLUMNS]
        blocks = [table(headers, body)]
        if verdict:
            blocks.append(paragraph(sentence(verdict)))
        out.append(Section(f"{task} (positive: {' + '.join(positives)})", blocks, 3, f"tasks/{task}"))
    return out


def validation_sections(frame: pd.DataFrame, dataset: Dataset) -> list[Section]:
    """Each selected head's validation metrics beside its test metrics, and the gap."""
    text = ("The heads were selected on validation, which is carved from the training pool; the test split was "
            "collected apart. Where validation is far above test, validation was optimistic: expect the test numbers. "
            + ("Decisions at probability 0.5" if dataset.multi_label else "Argmax decisions")
            + "; mean over seeds; Δ = test − validation.")  # fmt: skip
    out = [Section("Validation beside test", [paragraph(text)], key="validation")]
    metrics = ("auc", "sensitivity", "specificity", "f1")
    headers = ["backbone"] + [f"{name} {m}" for m in metrics for name in ("val", "test", "Δ")]
    for task in binary_tasks(dataset.classes, dataset.multi_label):
        body = []
        for backbone, members in frame[frame["task"] == task].groupby("backbone", sort=False):
            cells = [backbone]
            for metric in metrics:
                val, test = members[f"val_{metric}"].mean(), members[metric].mean()
                cells += [fmt(float(val)), fmt(float(test)), f"{test - val:+.3f}"]
            body.append(cells)
        out.append(Section(task, [table(headers, body)], 3, f"validation/{task}"))
    return out


def probe_section(winners: list[HeadResult], dataset: Dataset, settings: ReportSettings) -> list[Section]:
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
            body.append([head.backbone, fmt(head.best_val_loss), fmt(probe.best_val_loss), task,
                         f"{diff:+.3f}", f"{low:+.3f} to {high:+.3f}"])  # fmt: skip
    headers = ["backbone", "val loss head", "val loss probe", "task", "test AUC head − probe", "95% interval"]
    text = ("The standard baseline for frozen features: each backbone's selected Keras head beside its selected "
            "logistic-regression probe (first seeds). Validation loss decided both selections; the AUC difference "
            "is on test, with a paired bootstrap interval (both models scored on the same resamples of the test "
            "images). An interval that excludes 0 is a real test difference that validation could not see.")
    return [Section("The head against the logistic-regression probe", [paragraph(text), table(headers, body)],
                    key="probe")]  # fmt: skip


def operating_point_sections(frame: pd.DataFrame, dataset: Dataset, settings: ReportSettings) -> list[Section]:
    """Per task, the validation-chosen threshold for the target sensitivity and what it gives on test."""
    target = settings.target_sensitivity
    text = ("A missed disease costs more than a false alarm, so besides the argmax decision each selected head "
            f"gets a threshold on its positive-class probability: the highest one that reaches sensitivity {target:g} "
            "on the **validation** split. It is applied unchanged to test, which shows whether the sensitivity "
            "holds and what specificity it costs. Mean ± std over seeds.")  # fmt: skip
    out = [Section(f"Operating points: sensitivity {target:g} chosen on validation", [paragraph(text)],
                   key="operating")]  # fmt: skip
    columns = ["op_threshold", "op_val_sensitivity", "op_val_specificity", "op_test_sensitivity",
               "op_test_specificity", "op_test_precision"]  # fmt: skip
    headers = ["backbone", "threshold", "val sens", "val spec", "test sens", "test spec", "test precision",
               "test TP/FN/FP/TN"]  # fmt: skip
    for task in binary_tasks(dataset.classes, dataset.multi_label):
        rows = frame[frame["task"] == task]
        body = [
            [backbone, *[mean_std(members[c]) for c in columns],
             "/".join(str(int(members[f"op_test_{n}"].sum())) for n in ("tp", "fn", "fp", "tn"))]
            for backbone, members in rows.groupby("backbone", sort=False)
        ]  # fmt: skip
        out.append(Section(task, [table(headers, body)], 3, f"operating/{task}"))
    return out


def calibration_section(frame: pd.DataFrame, dataset: Dataset, plots: dict[str, str]) -> list[Section]:
    """Expected calibration error per head and task, and the reliability diagrams."""
    tasks = list(binary_tasks(dataset.classes, dataset.multi_label))
    body = [
        [backbone, *[mean_std(members[members["task"] == task]["ece"]) for task in tasks]]
        for backbone, members in frame.groupby("backbone", sort=False)
    ]
    text = ("Expected calibration error of each task's positive-class probability: the count-weighted mean gap "
            "between predicted probability and observed frequency over 10 equal-width bins (0 is perfect).")
    pictures = [figure(title, path) for title, path in plots.items() if title.startswith("Reliability")]
    return [Section("Calibration (test)", [paragraph(text), table(["backbone", *[f"ECE {t}" for t in tasks]], body),
                                           *pictures], key="calibration")]  # fmt: skip


def plots_section(plots: dict[str, str], drawn: bool = True) -> list[Section]:
    """Every plot not shown in another section; where the run drew none (``--no-plots``), a line saying so."""
    if not drawn:
        return [Section("Plots", [paragraph("None drawn: the run was given `--no-plots`.")], key="plots")]
    shown = [figure(title, path) for title, path in plots.items()
             if not title.startswith(("Reliability", "Paired ΔAUC", "Critical difference"))]  # fmt: skip
    return [Section("Plots", shown, key="plots")] if shown else []


def external_sections(frame: pd.DataFrame, external_frame: pd.DataFrame, external: Dataset,
                      dataset: Dataset) -> list[Section]:  # fmt: skip
    """The selected heads on the external test set beside the internal test: the drop, per task."""
    counts = external.counts()["test"]
    paths = {record.path for record in external.records}
    kept = [row for row in external.leakage if row.path in paths]
    blocks = [paragraph(f"**{len(kept)} external image(s) are also in the internal data** (same bytes; listed in "
                        "`external_leakage.csv`): the external scores may be optimistic. `--leakage drop` leaves them "
                        "out.")] if kept else []  # fmt: skip
    blocks += [bullets([*external.notes,
                        f"Files left out: {len(external.skipped)}"
                        + (" (see `external_skipped.csv`)" if external.skipped else ""),
                        ("Images showing each finding: " if external.multi_label else "Images per class: ")
                        + ", ".join(f"{label} {n}" for label, n in counts.items())]),
               paragraph("The heads selected on validation, unchanged (no retraining, no new threshold), scored on a "
                         "second dataset. Δ = external − internal; a large negative Δ means the model does not hold "
                         "up on other images. `op sens` is the sensitivity at the threshold chosen on validation. "
                         "Mean over seeds; every row, with its intervals, in `leaderboard.csv` (`eval_set` "
                         "external). Fine-tuned heads are not scored here.")]  # fmt: skip
    out = [Section("External test beside the internal test", blocks, key="external")]
    metrics = ("auc", "sensitivity", "specificity", "f1", "op_test_sensitivity")
    headers = ["backbone"] + [f"{name} {m.replace('op_test_sensitivity', 'op sens')}" for m in metrics
                              for name in ("internal", "external", "Δ")]  # fmt: skip
    for task in binary_tasks(dataset.classes, dataset.multi_label):
        if not (external_frame["task"] == task).any():
            continue  # a finding the external set does not record
        body = []
        for backbone, members in external_frame[external_frame["task"] == task].groupby("backbone", sort=False):
            internal = frame[(frame["task"] == task) & (frame["backbone"] == backbone)]
            cells = [backbone]
            for metric in metrics:
                inside, outside = float(internal[metric].mean()), float(members[metric].mean())
                gap = outside - inside
                cells += [fmt(inside), fmt(outside), "n/a" if math.isnan(gap) else f"{gap:+.3f}"]
            body.append(cells)
        out.append(Section(f"{task} (external)", [table(headers, body)], 3, f"external/{task}"))
    return out


def data_section(dataset: Dataset) -> list[Section]:
    """Where the data came from, what was left out, and the images per split and class."""
    counts = dataset.counts()
    leaked = len({r.group for r in dataset.leakage})
    dropped = sum(r.action == "dropped" for r in dataset.leakage)
    items = [f"Data: `{dataset.root}` ({dataset.layout} layout), classes: {', '.join(dataset.classes)}",
             *dataset.notes,
             f"Files left out: {len(dataset.skipped)}" + (" (see `skipped.csv`)" if dataset.skipped else ""),
             f"Leakage (same bytes in two splits or under two labels): {leaked} image(s)"
             + (f", {dropped} copies dropped (`--leakage drop`)" if dropped else "")
             + (" (see `leakage.csv`)" if dataset.leakage else "")]  # fmt: skip
    body = [[split, *counts[split].values(), len(dataset.split(split))] for split in counts]
    return [Section("Data and splits", [bullets(items), table(["split", *dataset.classes, "images"], body)],
                    key="data")]  # fmt: skip


def decision_rule(multi_label: bool) -> str:
    """How a task's decision and its AUC score are taken from a head's probabilities."""
    if multi_label:
        return ("Multi-label: one sigmoid per finding; a finding's decision is its probability ≥ 0.5 and its AUC "
                "uses that probability, on the images whose value of the finding is known.")  # fmt: skip
    return ("A binary decision is the multi-class argmax mapped onto the task; AUC uses the summed probability "
            "of the positive classes.")  # fmt: skip


def selection_section(sweep: SweepResult, settings: ReportSettings, multi_label: bool = False) -> list[Section]:
    """How the heads were selected (validation only) and how the tables read."""
    rule = "lowest validation loss" if settings.select_by == "val_loss" else f"highest validation {settings.select_by}"
    blocks = [paragraph(
        f"Each backbone's grid ({len(sweep.points)} trained heads in all) was scored on the **validation** "
        f"split only; per backbone, the grid point with the **{rule}** (mean over its seeds) was selected. "
        "Early stopping and the kept checkpoint also used validation loss. Only the selected heads were "
        "then predicted on the test split, once, for the tables below. " + decision_rule(multi_label) + " "
        f"Tables are sorted by test **{settings.sort_metric}** (ties: sensitivity); with several seeds a cell is "
        "mean ± standard deviation, with one seed it is the value and its 95% bootstrap confidence interval "
        f"({settings.bootstrap} resamples of the test images; every seed's intervals are in `leaderboard.csv`)."
    )]  # fmt: skip
    if any(is_finetuned(w.backbone) for w in sweep.winners):
        blocks.append(paragraph(
            "Rows named `<backbone>-ft` are that backbone fine-tuned end to end on images, starting from its "
            "selected frozen head (first seed): top layers unfrozen, BatchNormalization frozen, lower learning "
            "rates for earlier layers, early stopping on validation loss; how, in `weights` of `leaderboard.csv` "
            "and the `finetune_*` settings below."))  # fmt: skip
    return [Section("Selection rule", blocks, key="selection")]


def confusion_section(winners: list[HeadResult], dataset: Dataset) -> list[Section]:
    """Each selected head's multi-class confusion matrix on test, summed over its seeds."""
    blocks = [paragraph("Rows: true class; columns: argmax class.")]
    labels = dataset.labels("test")
    for backbone in dict.fromkeys(w.backbone for w in winners):
        heads = [w for w in winners if w.backbone == backbone]
        matrix = sum(multiclass_confusion(labels, w.probabilities["test"], len(dataset.classes)) for w in heads)
        accuracy = np.mean([multiclass_accuracy(labels, w.probabilities["test"]) for w in heads])
        rows = [[name, *row] for name, row in zip(dataset.classes, matrix.tolist(), strict=True)]
        blocks += [paragraph(f"**{backbone}** ({heads[0].image_size} px, {heads[0].settings.describe()}): "
                             f"{len(dataset.classes)}-class accuracy {fmt(float(accuracy))}"),
                   table(["true \\ predicted", *dataset.classes], rows)]  # fmt: skip
    return [Section("Confusion matrices of the selected heads (test, summed over seeds)", blocks, key="confusion")]


def macro_auc_section(frame: pd.DataFrame, external_frame: pd.DataFrame) -> list[Section]:
    """Multi-label: per backbone, the AUC averaged over findings (validation, test, external), mean over seeds."""
    body = []
    for backbone, members in frame.groupby("backbone", sort=False):
        heads = members.drop_duplicates("head_id")
        val_auc = members.groupby("head_id")["val_auc"].mean().mean()
        cells = [backbone, fmt(float(val_auc)), mean_std(heads["macro_auc"]),
                 fmt(float(heads["multiclass_accuracy"].mean()))]  # fmt: skip
        if not external_frame.empty:
            outside = external_frame[external_frame["backbone"] == backbone].drop_duplicates("head_id")
            cells.append(fmt(float(outside["macro_auc"].mean())) if len(outside) else "n/a")
        body.append(cells)
    headers = ["backbone", "val macro AUC", "test macro AUC", "test label accuracy"]
    headers += ["external macro AUC"] if not external_frame.empty else []
    text = ("The mean over findings of each finding's ROC AUC (findings whose AUC is undefined left out); label "
            "accuracy is the share of known (image, finding) values decided right at 0.5. Mean over seeds.")
    return [Section("Macro-averaged AUC per backbone", [paragraph(text), table(headers, body)], key="macro_auc")]


def grid_section(sweep: SweepResult, dataset: Dataset, select_by: str) -> list[Section]:
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
            ["**✓**" if key in chosen else "", row["backbone"], *setting_cells(row), row["seeds"],
             fmt(row["val_loss"]) if done else "failed",
             fmt(row[f"val_{first_task}_auc"]) if done else row["errors"],
             fmt(row["val_multiclass_accuracy"]) if done else ""]
        )  # fmt: skip
    headers = ["", "backbone", *SETTING_HEADERS, "seeds", "val loss", f"val {first_task} AUC", "val accuracy"]
    return [Section("Every grid point (validation split only)",
                    [paragraph("✓ marks the selected point per backbone. Full scores: `grid.csv`."),
                     table(headers, body)], key="grid")]  # fmt: skip


def extraction_blocks(plan: ComputePlan | None) -> list[Block]:
    """What the backbones computed in and where they ran, and why (runs before issue 16 recorded no ``plan``).

    The first sentence names what the backbones used: a backbone's own measured choice overrides the run-wide one,
    and when every backbone made the same choice, that choice is the run's whatever the run-wide value was.
    """
    if plan is None:
        return []
    alike = len({(one.runtime.value, one.precision.value) for one in plan.backbones}) == 1
    where, mine = (plan.backbones[0].runtime, plan.backbones[0].precision) if alike else (plan.runtime, plan.precision)
    how = f" (`--runtime {plan.runtime.requested}`: {where.reason})" if where.reason else ""
    sentence = (f"Features computed in **{mine.value}** (`--precision {plan.precision.requested}`: {mine.reason}), "
                f"runtime **{where.value}**{how}.")  # fmt: skip
    if alike or not plan.backbones:
        return [paragraph(sentence)]
    own = [f"{one.key}: **{one.runtime.value}** ({one.runtime.reason}), **{one.precision.value}** "
           f"({one.precision.reason})" for one in plan.own()]  # fmt: skip
    return [paragraph(sentence.replace("Features computed in", "Run-wide choice:", 1)
                      + " Backbones that measured another choice for themselves:"), bullets(own)]  # fmt: skip


def provenance_section(run_info: RunInfo) -> list[Section]:
    """Every setting of the run and every package version."""
    return [Section("Settings", [table(["setting", "value"], sorted(RunConfig.display(run_info.config).items()))],
                    key="settings"),
            Section("Versions", [table(["package", "version"], sorted(run_info.versions.items()))],
                    key="versions")]  # fmt: skip
