"""What the sweep and fine-tuning hand to the reports: selected heads and the sweep's records.

A leaf of the package beside ``benchmark.settings`` (the only module it
imports), so fine-tuning, reporting and prediction read results without
importing the sweep that makes them. Each result goes to JSON and back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.settings import GridKey, HeadSettings


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

    points: list[dict]
    winners: list[HeadResult]
    trained: int = 0
    crossval: CrossValResult | None = None

    @property
    def failed(self) -> list[dict]:
        """The records of the grid points that failed (a rerun trains them again)."""
        return [point for point in self.points if point["status"] != "done"]

    def to_json(self) -> dict:
        """Plain values."""
        return {"points": self.points, "winners": [w.to_json() for w in self.winners], "trained": self.trained}

    @classmethod
    def from_json(cls, values: dict) -> SweepResult:
        """The result ``to_json`` wrote."""
        return cls(values["points"], [HeadResult.from_json(w) for w in values["winners"]], values["trained"])


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
