"""``--views PA AP``: keep only the images taken in those views; the others are left out, each with its reason.

The view is the record's ``view`` attribute (``features.data.attributes``: a labels CSV's ``--view-column`` or a
DICOM header's View Position), compared in its one form, so ``--views pa`` keeps NIH's ``PA`` and DICOM's
``POSTERO_ANTERIOR`` alike.
"""

from __future__ import annotations

from dataclasses import replace

from features.data.attributes import VIEW, normalise_view
from features.data.dataset import Dataset
from features.data.records import Skip

# The two kinds of image --views leaves out (``Skip.kind``); an image of another view's reason names its view.
NO_VIEW = "no view recorded (--views keeps only the views it names)"
OTHER_VIEW = "another view (--views keeps only the views it names)"


def wanted_views(views: tuple[str, ...]) -> tuple[str, ...]:
    """The ``--views`` values in their one form (``pa`` -> ``PA``), in the order given, each once."""
    return tuple(dict.fromkeys(normalise_view(view) for view in views))


def views_problem(views: tuple[str, ...], dataset: Dataset) -> str | None:
    """Why ``--views`` cannot filter ``dataset`` (no image has a view recorded), or None."""
    if not views or any(record.attribute(VIEW) for record in dataset.records):
        return None
    return (f"--views {' '.join(views)}: no image has a view recorded; name the labels CSV's view column with "
            "--view-column NAME (NIH: 'View Position'), or read DICOM files, whose header records it")  # fmt: skip


def keep_views(dataset: Dataset, views: tuple[str, ...]) -> Dataset:
    """``dataset`` with only the records of ``views``; every other one left out with its reason, and a note saying
    how many were kept. Unchanged when ``views`` is empty."""
    if not views:
        return dataset
    wanted = wanted_views(views)
    kept, skipped = [], []
    for record in dataset.records:
        view = record.attribute(VIEW)
        if view in wanted:
            kept.append(record)
        else:
            detail = f"view {view}, not one of --views {' '.join(wanted)}"
            skipped.append(Skip(record.path, OTHER_VIEW, detail) if view else Skip(record.path, NO_VIEW))
    note = (f"views: {len(kept)} of {len(dataset.records)} images kept (--views {' '.join(wanted)}); "
            f"{len(skipped)} of other views or with no view recorded left out (see `skipped.csv`)")  # fmt: skip
    return replace(dataset, records=kept, skipped=dataset.skipped + skipped, notes=[*dataset.notes, note])
