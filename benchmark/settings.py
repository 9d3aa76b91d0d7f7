"""The settings each stage of a run takes, as small frozen dataclasses; this module imports nothing of ours.

``benchmark.config.RunConfig`` is the one place a run's settings are written
down; it derives one object per stage (``RunConfig.stages()``; the data and
extraction stages' objects live in ``features.settings``), and each stage
reads only its own. Keeping them in a leaf module lets any stage, a test or a
report import them without importing Keras or another stage.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

LR_SCHEDULES = ("constant", "step")
# "keras": Dropout -> Dense softmax trained with Adam and early stopping (benchmark.training.heads);
# "logreg": the same Dense softmax fitted to convergence by scikit-learn (benchmark.training.probe).
HEAD_KINDS = ("keras", "logreg")


class GridKey(NamedTuple):
    """One grid point: what its seeds share. The one spelling of the grid's columns."""

    backbone: str
    image_size: int
    kind: str
    lr: float
    dropout: float
    l2: float
    lr_schedule: str

    @classmethod
    def of(cls, row) -> GridKey:
        """The key of a stored point record or a table row (any mapping holding the grid's columns)."""
        return cls(*(row[name] for name in cls._fields))

    @classmethod
    def for_head(cls, backbone: str, image_size: int, settings: HeadSettings) -> GridKey:
        """The key of a head trained with ``settings`` on ``backbone`` at ``image_size``."""
        return cls(backbone, image_size, *(getattr(settings, name) for name in HEAD_GRID_FIELDS))

    @property
    def model_name(self) -> str:
        """The name this point's rows carry in the reports."""
        return model_name(self.backbone, self.kind)


# The head settings a grid point is made of, beside backbone and image size; seeds repeat a point.
HEAD_GRID_FIELDS = GridKey._fields[2:]
GRID_COLUMNS = GridKey._fields


def model_name(backbone: str, kind: str) -> str:
    """The name a head's rows carry in the reports: the backbone, with ``-logreg`` for the probe."""
    return backbone if kind == "keras" else f"{backbone}-{kind}"


@dataclass(frozen=True)
class HeadSettings:
    """How one head is trained.

    ``lr_schedule`` "step" multiplies the learning rate by ``step_decay_factor``
    every ``step_decay_epochs`` epochs; "constant" keeps it. ``l2`` adds
    ``l2 * sum(kernel ** 2)`` to the mean cross-entropy (as
    ``keras.regularizers.L2``; the bias is not penalised), the objective of an
    L2-regularised logistic regression with ``C = 1 / (2 * l2 * n_train)``.
    """

    kind: str = "keras"
    lr: float = 1e-3
    dropout: float = 0.2
    l2: float = 0.0
    lr_schedule: str = "constant"
    epochs: int = 100
    batch_size: int = 32
    patience: int = 10
    class_weight: str = "none"
    standardize: bool = True
    step_decay_epochs: int = 10
    step_decay_factor: float = 0.5
    seed: int = 0

    def describe(self) -> str:
        """The settings that tell heads apart, in words, for reports and logs."""
        if self.kind == "logreg":
            return f"logistic-regression probe, l2 {self.l2:g}"
        return f"Adam lr {self.lr:g}, dropout {self.dropout:g}, l2 {self.l2:g}, {self.lr_schedule}"

    def shared_part(self) -> tuple:
        """What heads trained together in one model must have in common."""
        # Heads with different schedules trained together drifted from their lone runs in a
        # test with three dropout rates, so the schedule stays a group setting for now.
        per_head = {"lr", "dropout", "l2"}
        return tuple(getattr(self, f.name) for f in fields(self) if f.name not in per_head)

    def to_json(self) -> dict:
        """Plain values, for point records."""
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict) -> HeadSettings:
        """The settings ``to_json`` wrote."""
        return cls(**values)


def probe_settings(l2_values: tuple[float, ...], base: HeadSettings) -> list[HeadSettings]:
    """One logistic-regression probe per penalty, sharing ``base``'s class weighting and seed.

    Learning rate, dropout and schedule do not apply to a probe; they are fixed so its grid key is stable.
    """
    return [
        HeadSettings(kind="logreg", lr=0.0, dropout=0.0, l2=l2, lr_schedule="constant", epochs=1, patience=0,
                     batch_size=base.batch_size, class_weight=base.class_weight, standardize=True, seed=base.seed)
        for l2 in l2_values
    ]  # fmt: skip


@dataclass(frozen=True)
class SweepSettings:
    """The head grid and how it is trained and selected, for every backbone and image size."""

    heads: tuple[HeadSettings, ...] = ()
    probes: tuple[HeadSettings, ...] = ()
    select_by: str = "val_loss"
    head_workers: int = 0
    results_dir: str = "results"
    cache_dir: str = ".cache/features"  # where a cluster task reads a group's features
    progress: bool = True

    @property
    def grid(self) -> list[HeadSettings]:
        """Every head trained per backbone and size: the Adam heads, then the probes."""
        return [*self.heads, *self.probes]


@dataclass(frozen=True)
class CrossValSettings:
    """Repeated, patient-grouped cross-validation of the head grid over the train + validation pool.

    ``folds`` outer folds (stratified by class, whole patients), drawn ``repeats``
    times with seeds ``seed``, ``seed + 1``, ...; inside each fold the grid is
    early-stopped and selected on an inner validation carve of about ``val_fraction``.
    """

    folds: int = 5
    repeats: int = 1
    seed: int = 0
    val_fraction: float = 0.2


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything that changes a fine-tuned model."""

    layers: str = "all"
    lr: float = 1e-4
    lr_factor: float = 0.1
    epochs: int = 5
    sizes: tuple[int, ...] = ()
    augment: bool = False
    batch_size: int = 16
    patience: int = 2
    class_weight: str = "none"
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the valid values."""
        if self.layers != "all" and not (self.layers.isdigit() and int(self.layers) >= 1):
            raise ValueError(f"--finetune-layers must be a positive number of layers or 'all', not {self.layers!r}")
        checks = [
            (0 < self.lr < math.inf, f"--finetune-lr must be positive (a finite number above 0), not {self.lr}"),
            (0 < self.lr_factor <= 1, f"--finetune-lr-factor must be in (0, 1], not {self.lr_factor}"),
            (self.epochs >= 1, f"--finetune-epochs must be at least 1, not {self.epochs}"),
            (self.batch_size >= 1, f"--finetune-batch-size must be at least 1, not {self.batch_size}"),
            (self.patience >= 0, f"--finetune-patience must be 0 or more, not {self.patience}"),
            (list(self.sizes) == sorted(self.sizes), f"--finetune-sizes must grow, small first: {self.sizes}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass(frozen=True)
class FinetuneRun:
    """The fine-tuning stage: the model settings, and where the backbones and pixels come from."""

    model: FinetuneSettings = FinetuneSettings()
    weights: str = "none"
    results_dir: str = "results"
    cache_dir: str = ".cache/features"
    progress: bool = True
    # How DICOM files are windowed: features.settings.DicomSettings' fields (--dicom-window, --dicom-voi), as values
    # (this module imports nothing of ours).
    dicom: tuple[str, int] = ("file", 1)


@dataclass(frozen=True)
class ReportSettings:
    """What the reports compute beyond the stored predictions, and the banners they carry."""

    sort_metric: str = "f1"
    select_by: str = "val_loss"
    target_sensitivity: float = 0.95
    bootstrap: int = 1000
    seed: int = 0
    random_init: bool = False
    limit_per_class: int | None = None
    subgroups: tuple[str, ...] = ()  # --subgroups as given (benchmark.evaluation.subgroups.parse_subgroups)
    plots: bool = True  # draw the figures (--no-plots: the tables alone)


# The experiment trackers --track knows; TensorBoard is its own option (--tensorboard DIR), not a tracker.
TRACKERS = ("mlflow",)
DEFAULT_EXPERIMENT = "cxr-bench"


@dataclass(frozen=True)
class TrackingSettings:
    """Where a finished run is logged, read back from its results folder once the run wrote it
    (``benchmark.tracking``): an MLflow tracking store, a TensorBoard log folder, both or neither."""

    mlflow_uri: str | None = None  # the tracking URI, resolved (--tracking-uri, MLFLOW_TRACKING_URI, the default)
    tensorboard: str | None = None  # the folder TensorBoard reads (--tensorboard DIR)
    experiment: str = DEFAULT_EXPERIMENT
    results_dir: str = "results"

    @property
    def active(self) -> bool:
        """Whether the run is logged anywhere."""
        return self.mlflow_uri is not None or self.tensorboard is not None


def tracking_uri(given: str | None, results_dir: str) -> str:
    """The MLflow tracking store: ``given`` (``--tracking-uri``), else MLflow's own ``MLFLOW_TRACKING_URI``, else a
    SQLite file beside the results folder, ``sqlite:///<its parent>/mlruns.db`` (MLflow 3 deprecates its file store)."""
    default = f"sqlite:///{Path(results_dir).resolve().parent / 'mlruns.db'}"
    return given or os.environ.get("MLFLOW_TRACKING_URI") or default
