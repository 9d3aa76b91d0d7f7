"""Every setting of a run, in one dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from backbones import BACKBONES, get_backbone
from benchmark.heads import HeadSettings
from benchmark.metrics import METRICS

_HEAD = HeadSettings()
WEIGHTS_CHOICES = ("imagenet", "none")
CLASS_WEIGHTS = ("none", "balanced")
VAL_SOURCES = ("carve", "official")


@dataclass
class RunConfig:
    """One benchmark run. The CLI fills it; every result row carries it."""

    data: str | None = None
    backbones: tuple[str, ...] = field(default_factory=lambda: tuple(BACKBONES))
    weights: str | None = None
    image_size: int | None = None
    lr: float = _HEAD.lr
    dropout: float = _HEAD.dropout
    epochs: int = _HEAD.epochs
    batch_size: int = _HEAD.batch_size
    patience: int = _HEAD.patience
    class_weight: str = _HEAD.class_weight
    standardize: bool = _HEAD.standardize
    seed: int = _HEAD.seed
    val_fraction: float = 0.2
    val_source: str = "carve"
    test_fraction: float = 0.2
    limit_per_class: int | None = None
    sort_metric: str = "f1"
    results_dir: str = "results"
    cache_dir: str = ".cache/features"
    extract_batch_size: int = 32
    progress: bool = True

    def validate(self) -> None:
        """Fail before any work on a bad value, naming the valid ones."""
        self.backbones = tuple(get_backbone(name).name for name in self.backbones)
        if not self.backbones:
            raise ValueError(f"no backbone chosen; valid backbones: {', '.join(BACKBONES)}")
        if self.weights is not None and self.weights not in WEIGHTS_CHOICES and not Path(self.weights).is_dir():
            raise ValueError(
                f"--weights must be one of {', '.join(WEIGHTS_CHOICES)} or an existing folder, not {self.weights!r}"
            )
        if self.data is not None and not Path(self.data).is_dir():
            raise ValueError(f"--data {self.data} is not a folder")
        if self.image_size is not None:
            for name in self.backbones:
                get_backbone(name).check_size(self.image_size)
        checks = [
            (self.lr > 0, f"--lr must be positive, not {self.lr}"),
            (0 <= self.dropout < 1, f"--dropout must be in [0, 1), not {self.dropout}"),
            (self.epochs >= 1, f"--epochs must be at least 1, not {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, not {self.batch_size}"),
            (self.extract_batch_size >= 1, f"--extract-batch-size must be at least 1, not {self.extract_batch_size}"),
            (self.patience >= 0, f"--patience must be 0 or more, not {self.patience}"),
            (0 < self.val_fraction < 1, f"--val-fraction must be in (0, 1), not {self.val_fraction}"),
            (0 < self.test_fraction < 1, f"--test-fraction must be in (0, 1), not {self.test_fraction}"),
            (
                self.limit_per_class is None or self.limit_per_class >= 1,
                f"--limit-per-class must be at least 1, not {self.limit_per_class}",
            ),
            (self.class_weight in CLASS_WEIGHTS, f"--class-weight must be one of {', '.join(CLASS_WEIGHTS)}"),
            (self.val_source in VAL_SOURCES, f"--val-source must be one of {', '.join(VAL_SOURCES)}"),
            (self.sort_metric in METRICS, f"--sort-metric must be one of {', '.join(METRICS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def head_settings(self) -> HeadSettings:
        """The head-training part of this config."""
        return HeadSettings(**{f.name: getattr(self, f.name) for f in fields(HeadSettings)})

    def as_dict(self) -> dict:
        """Plain-value copy, for result rows and the leaderboard header."""
        values = asdict(self)
        values["backbones"] = " ".join(self.backbones)
        return values
