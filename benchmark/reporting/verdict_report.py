"""The verdict's part of the report: tied-with-the-best, every paired comparison, the ensemble, published results.

Sections are data (``benchmark.reporting.document``); ``comparisons.csv``
holds every pair, and ``report.json``'s ``verdict`` the tied sets that the
leaderboard's "vs best" column and the web page's marks show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmark.evaluation.comparisons import TaskVerdict
from benchmark.evaluation.verdict import ENSEMBLE, ensemble_members, first_seeds, make_ensemble, verdicts
from benchmark.records import HeadResult
from benchmark.references import REFERENCES_VERSION, PublishedResult
from benchmark.reporting.document import Section, bullets, figure, fmt, paragraph, table
from benchmark.reporting.plots import plot_auc_differences
from benchmark.run_folder import RunFolder, plot_file
from benchmark.settings import ReportSettings
from features.data.dataset import Dataset


def comparison_rows(verdicts: dict[str, TaskVerdict], eval_set: str = "internal") -> list[dict]:
    """Every pair of every task as flat rows of ``comparisons.csv``."""
    return [{"eval_set": eval_set, **pair.to_row()} for verdict in verdicts.values() for pair in verdict.pairs]


def verdict_data(verdicts: dict[str, TaskVerdict]) -> dict:
    """What ``report.json`` keeps of the verdict per task: the heads, the best, the tied ones, the counts, and the
    same among single heads when the best is the ensemble."""
    out = {}
    for task, v in verdicts.items():
        single, tied = single_head_tie(v)
        out[task] = {"heads": list(dict.fromkeys([v.best, *(name for p in v.pairs for name in (p.a, p.b))])),
                     "best": v.best, "tied": list(v.tied), "n_pairs": v.n_pairs, "n_different": v.n_different,
                     "alpha": v.alpha, "best_single": single, "tied_single": tied, "sentence": sentence(v)}  # fmt: skip
    return out


def single_head_tie(verdict: TaskVerdict) -> tuple[str, list[str]]:
    """The best single head (the ensemble left out) and the single heads not told apart from it (it first).

    The same pairs and Holm-corrected p-values as the verdict: what a reader choosing one backbone needs.
    """
    best = _best_single(verdict) if verdict.pairs else verdict.best
    apart = {p.b if p.a == best else p.a for p in verdict.pairs if best in (p.a, p.b) and p.p_holm < verdict.alpha}
    heads = dict.fromkeys(name for pair in verdict.pairs for name in (pair.a, pair.b))
    return best, [best, *(name for name in heads if name not in (best, ENSEMBLE) and name not in apart)]


def sentence(verdict: TaskVerdict) -> str:
    """The verdict's sentence, with the single-head one after it when the ensemble is the best."""
    if verdict.best != ENSEMBLE:
        return verdict.sentence()
    single, tied = single_head_tie(verdict)
    n_single = len({name for pair in verdict.pairs for name in (pair.a, pair.b)} - {ENSEMBLE})
    verb = "is" if len(tied) == 1 else "are"
    return (f"{verdict.sentence()} Among single heads, {len(tied)} of {n_single} {verb} indistinguishable from the "
            f"best one ({single}).")


def difference_matrix(verdict: TaskVerdict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The heads, and the ``(n, n)`` AUC differences (row − column) and Holm p-values of one task."""
    names = list(dict.fromkeys(name for pair in verdict.pairs for name in (pair.a, pair.b))) or [verdict.best]
    index = {name: i for i, name in enumerate(names)}
    delta = np.zeros((len(names), len(names)))
    p_holm = np.ones((len(names), len(names)))
    for pair in verdict.pairs:
        i, j = index[pair.a], index[pair.b]
        delta[i, j], delta[j, i] = pair.auc.difference, -pair.auc.difference
        p_holm[i, j] = p_holm[j, i] = 1.0 if math.isnan(pair.p_holm) else pair.p_holm
    return names, delta, p_holm


def matrix_plot_files(tasks: list[str], eval_set: str = "internal") -> dict[str, str]:
    """Title -> path of each task's ΔAUC matrix."""
    suffix = "" if eval_set == "internal" else f"_{eval_set}"
    return {f"Paired ΔAUC {task}{suffix.replace('_', ' ')}": plot_file(f"auc_pairs_{task}{suffix}.png")
            for task in tasks}  # fmt: skip


def plot_matrices(results: RunFolder, verdicts: dict[str, TaskVerdict], eval_set: str = "internal") -> dict[str, str]:
    """Draw each task's ΔAUC matrix; title -> relative path."""
    made = matrix_plot_files(list(verdicts), eval_set)
    for (_title, relative), verdict in zip(made.items(), verdicts.values(), strict=True):
        names, delta, p_holm = difference_matrix(verdict)
        plot_auc_differences(names, delta, p_holm, results.file(relative), alpha=verdict.alpha,
                             title=f"{verdict.task}: paired test AUC differences ({eval_set} test)")  # fmt: skip
    return made


def _pair_cells(pair) -> list[str]:
    auc = pair.auc
    sens, spec = pair.sensitivity, pair.specificity
    return [pair.a, pair.b, f"{auc.difference:+.3f}", f"{auc.low:+.3f} to {auc.high:+.3f}", fmt(auc.p),
            fmt(pair.p_holm), f"{sens.difference:+.3f}", fmt(sens.p), f"{spec.difference:+.3f}",
            fmt(spec.p)]  # fmt: skip


def verdict_sections(verdicts: dict[str, TaskVerdict], plots: dict[str, str], eval_set: str = "internal",
                     key: str = "verdict") -> list[Section]:  # fmt: skip
    """Per task: the sentence, the tied heads, the pairs with the best, and the ΔAUC matrix."""
    where = "test images" if eval_set == "internal" else f"{eval_set} test images"
    text = (f"A ranking by point estimates is only an answer where the {where} can tell the heads apart. Every "
            "pair of selected heads (first seeds) is compared on the same images: DeLong's test for two correlated "
            "ROC curves on AUC (with the 95% interval of the difference), exact McNemar tests on sensitivity (the "
            "positives) and specificity (the negatives) at the argmax decision, and the same at the validation-"
            "chosen operating point (in `comparisons.csv`). p-values are Holm-corrected within each task. "
            "**Tied with the best** means not told apart from the head with the highest AUC.")  # fmt: skip
    out = [Section(f"The verdict: which heads the {where} tell apart", [paragraph(text)], key=key)]
    headers = ["A", "B", "Δ AUC", "95% interval", "p", "p Holm", "Δ sens", "McNemar p", "Δ spec", "McNemar p"]
    # One ΔAUC matrix per task, in order; none where the run drew no plots (--no-plots).
    pictures = [[figure(title, path)] for title, path in plots.items()] or [[] for _ in verdicts]
    for (task, verdict), picture in zip(verdicts.items(), pictures, strict=True):
        with_best = [pair for pair in verdict.pairs if verdict.best in (pair.a, pair.b)]
        blocks = [paragraph(sentence(verdict)),
                  bullets([f"Best by test AUC: **{verdict.best}**",
                           "Tied with the best: " + (", ".join(n for n in verdict.tied if n != verdict.best) or "none"),
                           "Told apart from the best: " + (", ".join(
                               n for p in with_best for n in (p.a, p.b) if n != verdict.best and n not in verdict.tied)
                               or "none")])]  # fmt: skip
        if with_best:
            blocks.append(table(headers, [_pair_cells(pair) for pair in with_best]))
        out.append(Section(task, [*blocks, *picture], 3, f"{key}/{task}"))
    return out


def ensemble_sections(best: str, members: list[str], verdicts: dict[str, TaskVerdict]) -> list[Section]:
    """Which heads the ensemble averages, why (validation), and its paired comparison with the best single head."""
    if len(members) < 2:
        return [Section("The ensemble of tied heads", [paragraph(
            f"No ensemble: on validation, every other head is told apart from the best one ({best}), so there is "
            "nothing to average.")], key="ensemble")]  # fmt: skip
    text = (f"On the **validation** split, the heads that paired tests (DeLong, Holm) cannot tell from the "
            f"validation-best head (**{best}**) on any task are averaged: {', '.join(members)}. The `{ENSEMBLE}` row "
            "is their mean probability, scored like any head; the test split chose nothing. Below, its paired "
            "comparison with the best single head on test.")  # fmt: skip
    rows = []
    for task, verdict in verdicts.items():
        single = _best_single(verdict)
        pair = next((p for p in verdict.pairs if {p.a, p.b} == {ENSEMBLE, single}), None)
        if pair is None:
            continue
        sign = 1 if pair.a == ENSEMBLE else -1
        auc = pair.auc
        low, high = sorted((sign * auc.low, sign * auc.high))
        rows.append([task, single, fmt(auc.auc_a if sign > 0 else auc.auc_b), fmt(auc.auc_b if sign > 0 else auc.auc_a),
                     f"{sign * auc.difference:+.3f}", f"{low:+.3f} to {high:+.3f}", fmt(pair.p_holm),
                     "yes" if ENSEMBLE in verdict.tied or verdict.best == ENSEMBLE else "no"])  # fmt: skip
    headers = ["task", "best single head", "AUC ensemble", "AUC single", "Δ", "95% interval", "p Holm",
               "ensemble tied with or is the best"]  # fmt: skip
    return [Section("The ensemble of tied heads", [paragraph(text), table(headers, rows)], key="ensemble")]


def _best_single(verdict: TaskVerdict) -> str:
    """The single head (not the ensemble) with the highest test AUC on the verdict's task."""
    aucs = {}
    for pair in verdict.pairs:
        aucs[pair.a], aucs[pair.b] = pair.auc.auc_a, pair.auc.auc_b
    aucs.pop(ENSEMBLE, None)
    return max(aucs, key=lambda name: -math.inf if math.isnan(aucs[name]) else aucs[name])


def references_section(references: tuple[PublishedResult, ...], frame: pd.DataFrame) -> list[Section]:
    """Published results on the same test images beside this run's rows, each with its protocol; not re-run."""
    if not references:
        return []
    rows = frame[frame["task"] == references[0].task].groupby("backbone", sort=False)
    weights = str(frame["config_weights"].iloc[0]) if "config_weights" in frame else ""
    pretraining = {"none": "none (random init)", "imagenet": "ImageNet"}.get(weights, f"weights folder `{weights}`")
    body = [[f"{name} (this run)", "", str(members["image_size"].iloc[0] or "mixed"),
             "mean of tied heads" if name == ENSEMBLE else "frozen features + head", pretraining, "validation",
             fmt(members["accuracy"].mean()), fmt(members["sensitivity"].mean()), fmt(members["specificity"].mean()),
             fmt(members["auc"].mean())] for name, members in rows]  # fmt: skip
    body += [[f"{ref.model} (published)", ref.source, str(ref.resolution), ref.protocol, ref.pretraining, ref.selection,
              fmt(ref.accuracy), fmt(ref.sensitivity), fmt(ref.specificity), fmt(ref.auc)] for ref in references]
    text = ("This run's test set is Kermany's 624 images, on which these results were **published, not re-run "
            "here**; PneumoniaMNIST's test images are the same 624, downsampled. Read the protocol before the number: "
            "a checkpoint chosen on test is optimistic, and fine-tuning or another pretraining is a different "
            f"question from frozen ImageNet features. Task {references[0].task}; references version "
            f"{REFERENCES_VERSION}; sources: " + "; ".join(dict.fromkeys(ref.citation for ref in references)) + ".")
    headers = ["model", "source", "px", "protocol", "pretraining", "selected on", "accuracy", "sensitivity",
               "specificity", "AUC"]  # fmt: skip
    return [Section("Published results on the same test set", [paragraph(text), table(headers, body)],
                    key="references")]  # fmt: skip


@dataclass
class Judgement:
    """The run's verdict: the validation-chosen ensemble, and the paired comparisons on test (and external)."""

    ensemble_best: str
    ensemble_members: list[str]
    internal: dict[str, TaskVerdict]
    external: dict[str, TaskVerdict]

    def data(self, winners: list[HeadResult]) -> dict:
        """What ``report.json`` keeps: the verdicts, the ensemble and its members' head ids."""
        firsts = first_seeds(winners)
        members = self.ensemble_members if len(self.ensemble_members) > 1 else []
        return {"verdict": verdict_data(self.internal), "external_verdict": verdict_data(self.external),
                "ensemble": {"validation_best": self.ensemble_best, "members": members,
                             "head_ids": [firsts[name].head_id for name in members]}}  # fmt: skip


def judge(winners: list[HeadResult], dataset: Dataset, settings: ReportSettings,
          external: Dataset | None = None) -> Judgement:  # fmt: skip
    """Choose the ensemble on validation (added to ``winners`` when it has two members or more), then compare
    every pair of selected heads on test, and on the external test set when there is one."""
    val_labels, multi = dataset.labels("val"), dataset.multi_label
    best, members = ensemble_members(winners, val_labels, dataset.classes, multi, settings.select_by)
    if len(members) > 1:
        winners.append(make_ensemble(winners, members, val_labels, multi))
    internal = verdicts(winners, dataset.labels("test"), val_labels, dataset.classes, multi,
                        settings.target_sensitivity)  # fmt: skip
    outside = {}
    if external is not None and not external.has_groups():
        outside = verdicts(winners, external.labels("test"), val_labels, dataset.classes, multi,
                           settings.target_sensitivity, key="external")  # fmt: skip
    return Judgement(best, members, internal, outside)
