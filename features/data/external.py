"""An external test set: a second dataset whose classes map onto the training ones, every image a test image.

The question that matters most for a chest X-ray model is whether it holds up
on another hospital's images. ``load_external`` reads the second dataset (class
folders or a labels CSV, as ``features.data.labels.load_dataset``), maps its
class names onto the training classes (``--external-map OLD=NEW``, else the
same name ignoring case), and leaves out, with the reason, every image whose
class maps onto none. When nothing maps, it stops with one line before any
extraction.

For multi-label training, the external set's findings (or, for a set of class
folders, its classes) map onto the training findings; a class may also map
onto ``No Finding`` (a NORMAL folder: every finding absent). A training finding
the external set does not record is unknown on every external image, and its
task is not scored externally.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from features.data.dataset import Dataset, ImageRecord
from features.data.labels import load_dataset
from features.data.records import GROUP_JOIN, NO_FINDING, Label, Skip
from features.settings import ExternalSettings


class ExternalError(ValueError):
    """An external test set that cannot be mapped onto the training classes."""


def _target(name: str, mapping: dict[str, Label], classes: tuple[str, ...]) -> Label | None:
    """The training class an external class ``name`` stands for (a class group in training order), or None."""
    if name in mapping:
        group = mapping[name].classes
        return Label.of_group(tuple(sorted(group, key=classes.index))) if len(group) > 1 else mapping[name]
    lowered = {known.lower(): known for known in classes}
    return Label.of_class(lowered[name.lower()]) if name.lower() in lowered else None


def _finding(name: str, mapping: dict[str, Label], classes: tuple[str, ...]) -> str | None:
    """The training finding (or ``No Finding``, when among ``classes``) an external class ``name`` stands for."""
    target = _target(name, mapping, classes)
    return None if target is None else target.text


def _check_mapping(mapping: dict[str, Label], targets: tuple[str, ...], what: str) -> None:
    """``ExternalError`` if a pair maps onto something that is not a training class (or finding)."""
    if what == "finding" and any(new.is_group for new in mapping.values()):
        raise ExternalError(f"--external-map onto several findings ({GROUP_JOIN}) is for one-class-per-image "
                            "training; map each external finding onto one training finding")  # fmt: skip
    wrong = sorted({member for new in mapping.values() for member in new.classes} - set(targets))
    if wrong:
        plural = {"class": "classes", "finding": "findings"}[what]
        raise ExternalError(f"--external-map names {', '.join(map(repr, wrong))}, not a training {what}; "
                            f"the training {plural} are: {', '.join(targets)}")  # fmt: skip


def load_external(settings: ExternalSettings, classes: tuple[str, ...], multi_label: bool = False) -> Dataset:
    """The external test set of ``settings``, labelled with the training ``classes``, every record in ``test``.

    Raises:
        ExternalError: a mapping onto a class that is not a training class, or no external class that maps.
        ValueError, OSError: the folder or its labels cannot be read (as for the training data).
    """
    # NEW of ``--external-map OLD=NEW`` is one class, or several joined by + (a class group).
    mapping = {old: Label.parse(new, multi_label=False) for old, new in settings.mapping}
    if multi_label:
        _check_mapping(mapping, (*classes, NO_FINDING), "finding")
        return _external_findings(settings, load_dataset(settings.root, settings.labels), classes, mapping)
    _check_mapping(mapping, classes, "class")
    dataset = load_dataset(settings.root, settings.labels)
    records, skipped, used = [], list(dataset.skipped), {}
    for record in dataset.records:
        target = _target(record.label.text, mapping, classes)
        if target is None:
            skipped.append(Skip(record.path, f"external class {record.label.text!r} maps onto no training class "
                            f"({', '.join(classes)}); --external-map {record.label.text}=CLASS would "
                            "map it"))  # fmt: skip
        else:
            records.append(replace(record, label=target, split="test"))
            used[record.label.text] = target.text
    if not records:
        raise ExternalError(
            f"no class of the external test set {settings.root} ({', '.join(dataset.classes)}) maps onto the "
            f"training classes ({', '.join(classes)}); name the pairs with --external-map OLD=NEW, for example "
            f"--external-map {dataset.classes[0]}={classes[0]}"
        )
    pairs = ", ".join(f"{old} → {new}" for old, new in sorted(used.items()))
    note = f"external test: `{Path(settings.root)}` ({dataset.layout} layout), {len(records)} images; classes {pairs}"
    if any(record.label.is_group for record in records):
        note += ("; an image of a class group (a+b) is scored only on the tasks where its whole group is on one "
                 "side, and the multi-class accuracy is not scored")  # fmt: skip
    return replace(dataset, classes=classes, records=records, skipped=skipped, notes=[note])


def _external_record(
    record: ImageRecord, external: Dataset, classes: tuple[str, ...], mapping: dict[str, Label], used: dict[str, str]
) -> ImageRecord | None:
    """One external image labelled with the training findings (unrecorded ones unknown), or None if nothing maps."""
    if not external.multi_label:
        name = record.label.text
        target = _finding(name, mapping, (*classes, NO_FINDING))
        if target is None and name.lower() == "normal":
            target = NO_FINDING
        if target is None:
            return None
        used[name] = target
        # A class folder records one finding; the others are unknown, but on a normal image none is shown.
        present, unknown = ([], []) if target == NO_FINDING else ([target], [c for c in classes if c != target])
        return replace(record, label=Label.of_findings(present, unknown), split="test")
    recorded = {_finding(name, mapping, classes) for name in external.classes} - {None}
    present, unknown = set(), {name for name in classes if name not in recorded}
    for name, value in zip(external.classes, record.label.targets(external.classes), strict=True):
        target = _finding(name, mapping, classes)
        if target is not None:
            used[name] = target
            (present if value == 1 else unknown if math.isnan(value) else set()).add(target)
    return replace(record, label=Label.of_findings(present, unknown - present), split="test")


def _external_findings(
    settings: ExternalSettings, external: Dataset, classes: tuple[str, ...], mapping: dict[str, Label]
) -> Dataset:
    """A multi-label training set's external test: findings (or classes) mapped onto the training findings."""
    records, skipped, used = [], list(external.skipped), {}
    for record in external.records:
        mapped = _external_record(record, external, classes, mapping, used)
        if mapped is None:
            skipped.append(Skip(record.path, f"external class {record.label.text!r} maps onto no training finding "
                            f"({', '.join(classes)}) nor {NO_FINDING!r}; --external-map {record.label.text}=FINDING "
                            "would map it"))  # fmt: skip
        else:
            records.append(mapped)
    if not any(target != NO_FINDING for target in used.values()):
        raise ExternalError(
            f"no finding or class of the external test set {settings.root} ({', '.join(external.classes)}) maps "
            f"onto the training findings ({', '.join(classes)}); name the pairs with --external-map OLD=NEW, for "
            f"example --external-map {external.classes[0]}={classes[0]}"
        )
    pairs = ", ".join(f"{old} → {new}" for old, new in sorted(used.items()))
    not_scored = [name for name in external.classes if name not in used and external.multi_label]
    note = f"external test: `{Path(settings.root)}` ({external.layout} layout), {len(records)} images; findings {pairs}"
    if not_scored:
        note += f"; not training findings, not scored: {', '.join(not_scored)}"
    unrecorded = [name for name in classes if name not in set(used.values())]
    if unrecorded and external.multi_label:
        note += f"; training findings it does not record (unknown, not scored): {', '.join(unrecorded)}"
    return replace(external, classes=classes, records=records, skipped=skipped, notes=[note], multi_label=True)
