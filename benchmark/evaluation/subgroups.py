"""Who a model works for: each head's test metrics per subgroup (sex, view, age bins, any kept column) and the
largest gap between subgroups. Pure functions of arrays and strings.

``--subgroups sex view age:0,18,40,65`` names the attributes (``features.data.attributes``); ``age:EDGES`` cuts
whole years into bins, ``[0, 18)``, ``[18, 40)``, ``[40, 65)``, ``[65, ∞)``, named ``0–17``, ``18–39``, ``40–64``,
``65+``. Each subgroup is scored at the head's operating point, the threshold chosen on **validation**
(``metrics.threshold_for_sensitivity``), never on test; its intervals are ``metrics.bootstrap_intervals``' over
the subgroup's own images. A subgroup with fewer than ``MIN_CASES`` positives (or negatives) is listed without the
rates it cannot support, saying so; images whose attribute is not recorded form a ``not recorded`` row, left out
of the gap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from benchmark.evaluation.metrics import binary_metrics, bootstrap_intervals
from features.data.attributes import AGE, STANDARD_ATTRIBUTES

NOT_RECORDED = "not recorded"
# predictions.csv's column of each image's subgroup: ``subgroup_sex``, ``subgroup_age`` (verify reads them).
SUBGROUP_PREFIX = "subgroup_"
# Fewer positives than this leaves a subgroup without sensitivity (and AUC); fewer negatives, without specificity
# (and AUC): one or two cases give a rate of 0 or 1 that says nothing of the model.
MIN_CASES = 5
# The metrics scored per subgroup, and those whose largest gap the report names.
SUBGROUP_METRICS = ("auc", "sensitivity", "specificity")
GAP_METRICS = ("auc", "sensitivity")
# Where each standard attribute comes from, for the message when no image has it recorded.
_SOURCES = {"sex": "--sex-column NAME", "age": "--age-column NAME", "view": "--view-column NAME"}
_EDGES = re.compile(r"^\d+(,\d+)*$")
BINS_EXAMPLE = "age:0,18,40,65"


@dataclass(frozen=True)
class SubgroupSpec:
    """One ``--subgroups`` value: the attribute it reads and, for age, the bin edges in whole years."""

    attribute: str
    edges: tuple[int, ...] = ()

    @property
    def text(self) -> str:
        """As it is given on the command line: ``sex``, ``age:0,18,65``."""
        return f"{self.attribute}:{','.join(map(str, self.edges))}" if self.edges else self.attribute

    def bins(self) -> tuple[str, ...]:
        """The age bins' names in order (``under 18`` first where the first edge is above 0); () without bins."""
        if not self.edges:
            return ()
        below = (f"under {self.edges[0]}",) if self.edges[0] > 0 else ()
        inner = tuple(_span(low, high - 1) for low, high in zip(self.edges, self.edges[1:], strict=False))
        return (*below, *inner, f"{self.edges[-1]}+")

    def subgroup_of(self, value: str) -> str:
        """The subgroup of an image whose attribute is ``value`` (``""``: not recorded)."""
        if not value:
            return NOT_RECORDED
        if not self.edges:
            return value
        index = int(np.searchsorted(self.edges, float(value), side="right"))  # edges[i - 1] <= value < edges[i]
        return self.bins()[index if self.edges[0] > 0 else index - 1]


def _span(low: int, high: int) -> str:
    """A bin of whole years by its first and last year: ``18–39``, or ``18`` for one year."""
    return str(low) if low == high else f"{low}–{high}"


def parse_subgroup(text: str) -> SubgroupSpec:
    """The ``SubgroupSpec`` of one ``--subgroups`` value; ``ValueError`` in one line for bad bins."""
    name, sign, edges = text.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"--subgroups {text!r}: name an attribute (sex, age:BINS, view) or a labels CSV column")
    if not sign:
        if name == AGE:
            raise ValueError(f"--subgroups age needs its bins in whole years, for example {BINS_EXAMPLE}")
        return SubgroupSpec(name)
    if name != AGE:
        raise ValueError(f"--subgroups {text}: only age is cut into bins ({BINS_EXAMPLE}); give {name} alone")
    if not _EDGES.match(edges.replace(" ", "")):
        raise ValueError(f"--subgroups {text}: age bins are whole years separated by commas, for example "
                         f"{BINS_EXAMPLE}")  # fmt: skip
    values = tuple(int(one) for one in edges.replace(" ", "").split(","))
    if any(high <= low for low, high in zip(values, values[1:], strict=False)):
        raise ValueError(f"--subgroups {text}: the bin edges must increase ({BINS_EXAMPLE} gives 0–17, 18–39, "
                         "40–64 and 65+)")  # fmt: skip
    return SubgroupSpec(AGE, values)


def parse_subgroups(texts: Iterable[str]) -> tuple[SubgroupSpec, ...]:
    """Every ``--subgroups`` value parsed; an attribute given twice fails."""
    specs = tuple(parse_subgroup(text) for text in texts)
    names = [spec.attribute for spec in specs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"--subgroups names {', '.join(twice)} twice; give each attribute once")
    return specs


def kept_columns(specs: Iterable[SubgroupSpec]) -> tuple[str, ...]:
    """The labels CSV columns the run keeps on each record for its subgroups: the non-standard attributes."""
    return tuple(spec.attribute for spec in specs if spec.attribute not in STANDARD_ATTRIBUTES)


def subgroups_problem(specs: Iterable[SubgroupSpec], recorded: Iterable[Iterable[tuple[str, str]]]) -> str | None:
    """Why the subgroups cannot be reported: an attribute no image has recorded (saying which option gives it),
    or None. ``recorded`` is each image's attributes (``ImageRecord.attributes``)."""
    seen = {name for attributes in recorded for name, _ in attributes}
    for spec in specs:
        if spec.attribute not in seen:
            where = (f"name the labels CSV's column with {_SOURCES[spec.attribute]}, or read DICOM files, whose "
                     f"header records it" if spec.attribute in _SOURCES else
                     "it is read from the labels CSV's column of that name (--labels FILE.csv)")  # fmt: skip
            return f"--subgroups {spec.text}: no image has {spec.attribute} recorded; {where}"
    return None


def subgroup_order(spec: SubgroupSpec, present: Iterable[str]) -> list[str]:
    """The subgroups a table lists: every age bin in order (an empty one too), else the values present, sorted
    (views PA, AP ... as written); ``not recorded`` last, where present."""
    present = set(present)
    named = list(spec.bins()) if spec.edges else sorted(present - {NOT_RECORDED})
    return named + ([NOT_RECORDED] if NOT_RECORDED in present else [])


@dataclass(frozen=True)
class SubgroupScore:
    """One subgroup's test images and its metrics at the head's validation-chosen threshold, each with its 95%
    bootstrap interval (NaN where not scored); ``too_small`` says which it lacks and why ("" when scored)."""

    subgroup: str
    n: int
    positives: int
    negatives: int
    auc: float = math.nan
    auc_ci_low: float = math.nan
    auc_ci_high: float = math.nan
    sensitivity: float = math.nan
    sensitivity_ci_low: float = math.nan
    sensitivity_ci_high: float = math.nan
    specificity: float = math.nan
    specificity_ci_low: float = math.nan
    specificity_ci_high: float = math.nan
    too_small: str = ""


def _too_small(n: int, positives: int, negatives: int, minimum: int) -> tuple[tuple[str, ...], str]:
    """The metrics a subgroup cannot support, and the reason in words ("" when it supports all)."""
    if n == 0:
        return SUBGROUP_METRICS, "no image"
    few = [f"{count} {word}{'' if count == 1 else 's'}" for count, word in ((positives, "positive"),
           (negatives, "negative")) if count < minimum]  # fmt: skip
    lacks = (("sensitivity",) if positives < minimum else ()) + (("specificity",) if negatives < minimum else ())
    if not lacks:
        return (), ""
    lacks = ("auc", *lacks)
    return lacks, f"{' and '.join(few)} (fewer than {minimum}): no {', no '.join(_WORDS[m] for m in lacks)}"


_WORDS = {"auc": "AUC", "sensitivity": "sensitivity", "specificity": "specificity"}


def score_subgroup(
    name: str, truth: np.ndarray, score: np.ndarray, threshold: float, *, resamples: int, seed: int,
    minimum: int = MIN_CASES,
) -> SubgroupScore:  # fmt: skip
    """One subgroup's counts, AUC, and sensitivity and specificity at ``threshold`` (chosen on validation), with
    percentile bootstrap intervals over its images (none when ``resamples`` is 0)."""
    truth, score = np.asarray(truth, dtype=bool), np.asarray(score, dtype=np.float64)
    positives = int(truth.sum())
    negatives = len(truth) - positives
    lacks, reason = _too_small(len(truth), positives, negatives, minimum)
    counts = {"subgroup": name, "n": len(truth), "positives": positives, "negatives": negatives, "too_small": reason}
    scored = [metric for metric in SUBGROUP_METRICS if metric not in lacks]
    if not scored:
        return SubgroupScore(**counts)
    decision = score >= threshold
    values = binary_metrics(truth, decision, score)
    intervals = (bootstrap_intervals(truth, decision, score, resamples=resamples, seed=seed) if resamples
                 else dict.fromkeys(scored, (math.nan, math.nan)))  # fmt: skip
    metrics = {}
    for metric in scored:
        metrics[metric] = values[metric]
        metrics[f"{metric}_ci_low"], metrics[f"{metric}_ci_high"] = intervals[metric]
    return SubgroupScore(**counts, **metrics)


def score_subgroups(
    spec: SubgroupSpec, values: list[str], truth: np.ndarray, score: np.ndarray, threshold: float, *,
    resamples: int, seed: int, minimum: int = MIN_CASES,
) -> list[SubgroupScore]:  # fmt: skip
    """Every subgroup of ``spec`` (``subgroup_order``) among the images whose attribute values are ``values``
    (aligned with ``truth`` and ``score``), scored by ``score_subgroup``."""
    groups = np.array([spec.subgroup_of(value) for value in values], dtype=object)
    truth, score = np.asarray(truth, dtype=bool), np.asarray(score, dtype=np.float64)
    return [score_subgroup(name, truth[groups == name], score[groups == name], threshold, resamples=resamples,
                           seed=seed, minimum=minimum)
            for name in subgroup_order(spec, groups.tolist())]  # fmt: skip


@dataclass(frozen=True)
class Gap:
    """The largest gap of one metric between the subgroups that can be scored: the lowest and the highest."""

    metric: str
    low: str
    low_value: float
    high: str
    high_value: float

    @property
    def gap(self) -> float:
        """``high_value - low_value``: 0 when every scored subgroup does as well."""
        return self.high_value - self.low_value

    def to_json(self) -> dict:
        """Plain values, the gap too."""
        return {"metric": self.metric, "low": self.low, "low_value": self.low_value, "high": self.high,
                "high_value": self.high_value, "gap": self.gap}  # fmt: skip


def largest_gap(scores: Iterable[SubgroupScore], metric: str) -> Gap | None:
    """Max − min of ``metric`` over the recorded subgroups that can be scored on it, naming the two; None where
    fewer than two can (the ``not recorded`` row is never one of them: it is no group of people)."""
    scored = [(getattr(one, metric), one.subgroup) for one in scores
              if one.subgroup != NOT_RECORDED and not math.isnan(getattr(one, metric))]  # fmt: skip
    if len(scored) < 2:
        return None
    (low_value, low), (high_value, high) = min(scored), max(scored)
    return Gap(metric, low, low_value, high, high_value)

