"""What the sweep and fine-tuning hand to the reports: grid points, selected heads and the sweep's records.

A leaf of the package beside ``benchmark.settings`` (the only module it
imports), so fine-tuning, reporting and prediction read results without
importing the sweep that makes them. Each result goes to JSON and back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from benchmark.settings import GridKey, HeadSettings

# A finished grid point's validation record, beside its settings; a failed point has none of these.
POINT_SCORES = ("best_epoch", "epochs_run", "seconds", "val_loss", "val_multiclass_accuracy", "val", "val_macro_auc")


@dataclass
class PointRecord:
    """One grid point's stored record (``point.json``): its grid key, seed and settings, and either its validation
    scores (``status`` "done") or why it failed (``error``; a rerun trains it again).

    ``val`` holds each binary task's validation metrics; ``val_macro_auc`` is None but in a multi-label run.
    """

    point_id: str
    key: GridKey
    seed: int
    weights: str
    settings: HeadSettings
    status: str
    error: str = ""
    best_epoch: int = 0
    epochs_run: int = 0
    seconds: float = 0.0
    val_loss: float = math.nan
    val_multiclass_accuracy: float = math.nan
    val: dict[str, dict[str, float]] = field(default_factory=dict)
    val_macro_auc: float | None = None

    @property
    def done(self) -> bool:
        """Whether the point trained and was scored (a failure is a record of what happened, not a result)."""
        return self.status == "done"

    def selection_score(self, select_by: str) -> float:
        """The validation number ``select_by`` names, oriented so that higher is better."""
        if select_by == "val_loss":
            return -self.val_loss
        if select_by == "macro_auc":  # a point stored before the score existed: never chosen
            return -math.inf if self.val_macro_auc is None else self.val_macro_auc
        task, metric = select_by.split(".")
        return self.val[task][metric]

    def to_json(self) -> dict:
        """Plain values, in the layout ``point.json`` has always had (the grid key's columns spelled out)."""
        values = {"point_id": self.point_id, **self.key._asdict(), "seed": self.seed, "weights": self.weights,
                  "settings": self.settings.to_json(), "status": self.status, "error": self.error}  # fmt: skip
        if self.done:
            values |= {name: getattr(self, name) for name in POINT_SCORES}
            if self.val_macro_auc is None:
                del values["val_macro_auc"]
        return values

    @classmethod
    def from_json(cls, values: dict) -> PointRecord:
        """The record ``to_json`` wrote (``KeyError`` or ``TypeError`` where ``values`` is not a grid point's)."""
        return cls(
            values["point_id"], GridKey.of(values), values["seed"], values["weights"],
            HeadSettings.from_json(values["settings"]), values["status"], values["error"],
            **{name: values[name] for name in POINT_SCORES if name in values},
        )  # fmt: skip


@dataclass
class HeadResult:
    """A selected head: its settings, training record and validation and test probabilities."""

    backbone: str
    image_size: int
    settings: HeadSettings
    weights: str
    head_id: str
    best_epoch: int
    epochs_run: int
    best_val_loss: float
    history: dict[str, list[float]]
    probabilities: dict[str, np.ndarray]

    def grid_key(self) -> GridKey:
        """The grid point this head was trained at (``backbone`` is the row name, ``-logreg`` included)."""
        return GridKey.for_head(self.backbone, self.image_size, self.settings)

    def to_json(self) -> dict:
        """Plain values (probabilities as nested lists)."""
        return {
            "backbone": self.backbone, "image_size": self.image_size, "settings": self.settings.to_json(),
            "weights": self.weights, "head_id": self.head_id, "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run, "best_val_loss": self.best_val_loss, "history": self.history,
            "probabilities": {split: np.asarray(p).tolist() for split, p in self.probabilities.items()},
        }  # fmt: skip

    @classmethod
    def from_json(cls, values: dict) -> HeadResult:
        """The result ``to_json`` wrote."""
        return cls(
            **{name: values[name] for name in ("backbone", "image_size", "weights", "head_id", "best_epoch",
                                               "epochs_run", "best_val_loss", "history")},
            settings=HeadSettings.from_json(values["settings"]),
            probabilities={split: np.asarray(p, dtype=np.float32) for split, p in values["probabilities"].items()},
        )  # fmt: skip


@dataclass
class SweepResult:
    """Every grid point's stored record, the selected heads, how many heads this run trained, and the run's
    cross-validation of the grid when it made one (``--cv``; not part of ``to_json``: it has its own)."""

    points: list[PointRecord]
    winners: list[HeadResult]
    trained: int = 0
    crossval: CrossValResult | None = None

    @property
    def failed(self) -> list[PointRecord]:
        """The records of the grid points that failed (a rerun trains them again)."""
        return [point for point in self.points if not point.done]

    def to_json(self) -> dict:
        """Plain values."""
        return {"points": [p.to_json() for p in self.points], "winners": [w.to_json() for w in self.winners],
                "trained": self.trained}  # fmt: skip

    @classmethod
    def from_json(cls, values: dict) -> SweepResult:
        """The result ``to_json`` wrote."""
        return cls([PointRecord.from_json(p) for p in values["points"]],
                   [HeadResult.from_json(w) for w in values["winners"]], values["trained"])  # fmt: skip


# The columns of a cross-validation row, in order: the fold, the model and its selected grid point, the held-out
# fold's metrics (at the argmax decision, AUC from the positive group's score) and the official test split's AUC.
CROSSVAL_COLUMNS = (
    "repeat", "fold", "backbone", "image_size", "task", "kind", "lr", "dropout", "l2", "lr_schedule", "seeds",
    "n_heldout", "auc", "sensitivity", "specificity", "accuracy", "f1", "test_auc", "seconds",
)  # fmt: skip


@dataclass
class CrossValResult:
    """Repeated, patient-grouped cross-validation: one row per repeat, fold, model and task (``CROSSVAL_COLUMNS``).

    ``seconds`` is the whole cross-validation's time; ``trained`` the heads trained by this run (0 on a rerun
    that found every fold's points finished).
    """

    folds: int
    repeats: int
    rows: list[dict]
    seconds: float = 0.0
    trained: int = 0

    def to_json(self) -> dict:
        """Plain values."""
        return {"folds": self.folds, "repeats": self.repeats, "rows": self.rows, "seconds": self.seconds,
                "trained": self.trained}  # fmt: skip

    @classmethod
    def from_json(cls, values: dict) -> CrossValResult:
        """The result ``to_json`` wrote."""
        return cls(values["folds"], values["repeats"], values["rows"], values["seconds"], values["trained"])
