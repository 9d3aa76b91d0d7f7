"""The settings of the data and feature-extraction stages, as frozen dataclasses; imports nothing of ours.

``benchmark.config.RunConfig`` derives them (``RunConfig.stages()``); they
live here, below the benchmark package, because the features stages take them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataSettings:
    """How the image check, the splits and the leakage check run.

    ``rehash`` reads every image's bytes again on each run (``features.data.audit.rehash_images``) instead of
    trusting the check remembered for its size and modification time.
    """

    min_side: int = 32
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    val_source: str = "carve"
    limit_per_class: int | None = None
    leakage: str = "warn"
    seed: int = 0
    cache_dir: str = ".cache/features"
    progress: bool = True
    rehash: bool = False


@dataclass(frozen=True)
class ExtractSettings:
    """How features are extracted and cached (everything but the backbone and the image size).

    ``precision`` is the resolved compute type (float32, bfloat16 or float16), never ``auto``: the run resolves
    ``--precision auto`` once, before extraction (``benchmark.pipeline``), so every stage sees the same value.
    ``backbone_precisions`` holds ``(backbone, size, precision)`` where ``auto`` chose otherwise for a backbone;
    ``runtime`` and ``backbone_runtimes`` are the same for ``--runtime auto``.
    """

    weights: str = "none"
    batch_size: int = 32
    shard_size: int = 512
    seed: int = 0
    precision: str = "float32"
    jit_compile: bool = False
    runtime: str = "keras"
    pixel_cache: bool = True
    cache_dir: str = ".cache/features"
    progress: bool = True
    backbone_precisions: tuple[tuple[str, int, str], ...] = ()
    backbone_runtimes: tuple[tuple[str, int, str], ...] = ()

    def precision_for(self, backbone: str, size: int) -> str:
        """The compute type of ``backbone`` at ``size``: its own where ``auto`` chose one, else the run's."""
        return _own(self.backbone_precisions, backbone, size, self.precision)

    def runtime_for(self, backbone: str, size: int) -> str:
        """The runtime of ``backbone`` at ``size``: its own where ``auto`` chose one, else the run's."""
        return _own(self.backbone_runtimes, backbone, size, self.runtime)


def _own(choices: tuple[tuple[str, int, str], ...], backbone: str, size: int, run: str) -> str:
    """The value ``choices`` holds for ``(backbone, size)``, else the run's."""
    return next((value for name, at, value in choices if (name, at) == (backbone, size)), run)


@dataclass(frozen=True)
class LabelSettings:
    """Where a dataset's labels come from: class folders (``labels`` None) or a CSV beside the image folder.

    ``classes`` (optional) is the label set, in label-index order; a CSV label outside it is left out as
    unknown. ``patient_column`` and ``split_column`` are optional: without a patient column the patient is
    read from the file name, as for folders; without a split column test and validation are carved.
    ``split_lists`` pairs a split with a text file naming its images, one a line (a CSV path or its file
    name), the official split lists NIH publishes; it replaces a split column.

    Multi-label (several findings per image) comes in two forms: ``findings_column``, one column of
    findings separated by ``finding_separator`` with ``no_finding`` for an image without one (NIH's
    ``Finding Labels``); or ``finding_columns``, one column per finding holding 1, 0, -1 (uncertain) or
    blank (CheXpert), with ``uncertain`` and ``blank`` saying what -1 and blank stand for: ``ignore``
    (unknown: left out of that finding's loss and metrics), ``zeros`` or ``ones``.
    """

    labels: str | None = None
    path_column: str = "path"
    label_column: str = "label"
    patient_column: str | None = None
    patient_pattern: str | None = None  # a regular expression finding the patient in the path (CheXpert)
    split_column: str | None = None
    classes: tuple[str, ...] = ()
    split_lists: tuple[tuple[str, str], ...] = ()  # (split, file of image names): NIH's train_val_list.txt
    findings_column: str | None = None
    finding_separator: str = "|"
    no_finding: str = "No Finding"
    finding_columns: tuple[str, ...] = ()
    uncertain: str = "ignore"
    blank: str = "zeros"

    @property
    def multi_label(self) -> bool:
        """Whether the CSV gives several findings per image (either form) rather than one class."""
        return self.findings_column is not None or bool(self.finding_columns)


@dataclass(frozen=True)
class ExternalSettings:
    """A second dataset the selected heads are tested on, unchanged: its folder, its labels and a class mapping.

    ``mapping`` pairs an external class name with the training class it stands for; without a pair a name
    maps onto the training class of the same name, ignoring case.
    """

    root: str
    labels: LabelSettings = LabelSettings()
    mapping: tuple[tuple[str, str], ...] = ()


# What CheXpert's uncertain (-1) and blank (not mentioned) values may stand for.
UNKNOWN_POLICIES = ("ignore", "zeros", "ones")
