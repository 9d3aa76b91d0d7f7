"""An external test set: a second dataset whose classes map onto the training ones, every image a test image.

The question that matters most for a chest X-ray model is whether it holds up
on another hospital's images. ``load_external`` reads the second dataset (class
folders or a labels CSV, as ``features.data.labels.load_dataset``), maps its
class names onto the training classes (``--external-map OLD=NEW``, else the
same name ignoring case), and leaves out, with the reason, every image whose
class maps onto none. When nothing maps, it stops with one line before any
extraction.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from features.data.dataset import Dataset
from features.data.labels import load_dataset
from features.settings import ExternalSettings


class ExternalError(ValueError):
    """An external test set that cannot be mapped onto the training classes."""


def _target(label: str, mapping: dict[str, str], classes: tuple[str, ...]) -> str | None:
    """The training class an external ``label`` stands for, or None."""
    if label in mapping:
        return mapping[label]
    lowered = {name.lower(): name for name in classes}
    return lowered.get(label.lower())


def load_external(settings: ExternalSettings, classes: tuple[str, ...]) -> Dataset:
    """The external test set of ``settings``, labelled with the training ``classes``, every record in ``test``.

    Raises:
        ExternalError: a mapping onto a class that is not a training class, or no external class that maps.
        ValueError, OSError: the folder or its labels cannot be read (as for the training data).
    """
    mapping = dict(settings.mapping)
    wrong = sorted(new for new in mapping.values() if new not in classes)
    if wrong:
        raise ExternalError(f"--external-map names {', '.join(map(repr, wrong))}, not a training class; "
                            f"the training classes are: {', '.join(classes)}")  # fmt: skip
    dataset = load_dataset(settings.root, settings.labels)
    records, skipped, used = [], list(dataset.skipped), {}
    for record in dataset.records:
        target = _target(record.label, mapping, classes)
        if target is None:
            skipped.append((record.path, f"external class {record.label!r} maps onto no training class "
                            f"({', '.join(classes)}); --external-map {record.label}=CLASS would map it"))  # fmt: skip
        else:
            records.append(replace(record, label=target, split="test"))
            used[record.label] = target
    if not records:
        raise ExternalError(
            f"no class of the external test set {settings.root} ({', '.join(dataset.classes)}) maps onto the "
            f"training classes ({', '.join(classes)}); name the pairs with --external-map OLD=NEW, for example "
            f"--external-map {dataset.classes[0]}={classes[0]}"
        )
    pairs = ", ".join(f"{old} → {new}" for old, new in sorted(used.items()))
    note = f"external test: `{Path(settings.root)}` ({dataset.layout} layout), {len(records)} images; classes {pairs}"
    return replace(dataset, classes=classes, records=records, skipped=skipped, notes=[note])
