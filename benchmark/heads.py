"""The classification head trained on cached features: [Standardize] -> Dropout -> Dense softmax.

The backbone's GlobalAveragePooling is applied at extraction time
(``pooling="avg"``): pooling has no weights and comes before the dropout, so
training on the pooled vectors is exactly the GAP -> Dropout -> Dense head of
the reference study, on arrays 49 to 100 times smaller.

Standardize (on by default) z-scores each feature with the training split's
mean and standard deviation. It is a fixed affine map the Dense layer could
absorb, so the heads that can be learnt are the same; it only makes Adam's
steps matter at every feature scale. Without it, features from randomly
initialised backbones (MobileNetV2's are around 1e-12) leave the head stuck at
chance.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from tqdm.auto import tqdm

from features.dataset import class_balance

CHECKPOINT = "best.keras"
HISTORY = "history.csv"


@dataclass(frozen=True)
class HeadSettings:
    """How one head is trained."""

    lr: float = 1e-3
    dropout: float = 0.2
    epochs: int = 100
    batch_size: int = 32
    patience: int = 10
    class_weight: str = "none"
    standardize: bool = True
    seed: int = 0


@dataclass
class TrainedHead:
    """A trained head with its best weights and how training went."""

    model: keras.Model
    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int
    seconds: float
    checkpoint: Path

    @property
    def best_val_loss(self) -> float:
        """Validation loss at the restored epoch."""
        return self.history["val_loss"][self.best_epoch - 1]


@keras.saving.register_keras_serializable(package="cxr_bench")
class Standardize(keras.layers.Layer):
    """``(x - mean) / std`` with fixed, saved statistics."""

    def __init__(self, mean, std, **kwargs):
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self.mean_values = [float(v) for v in np.asarray(mean).ravel()]
        self.std_values = [float(v) for v in np.asarray(std).ravel()]

    def call(self, inputs):
        mean = keras.ops.convert_to_tensor(self.mean_values, dtype=inputs.dtype)
        std = keras.ops.convert_to_tensor(self.std_values, dtype=inputs.dtype)
        return (inputs - mean) / std

    def get_config(self):
        return {**super().get_config(), "mean": self.mean_values, "std": self.std_values}


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (1 where a feature is constant), in float64."""
    values = np.asarray(features, dtype=np.float64)
    mean, std = values.mean(axis=0), values.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def build_head(
    feature_size: int, n_classes: int, dropout: float, statistics: tuple[np.ndarray, np.ndarray] | None = None
) -> keras.Model:
    """[Standardize] -> Dropout -> Dense softmax over pooled backbone features."""
    inputs = keras.Input(shape=(feature_size,), name="pooled_features")
    hidden = inputs if statistics is None else Standardize(*statistics, name="standardize")(inputs)
    hidden = keras.layers.Dropout(dropout, name="dropout")(hidden)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="softmax")(hidden)
    return keras.Model(inputs, outputs, name="gap_dropout_softmax_head")


class _EpochBar(keras.callbacks.Callback):
    """One tqdm step per epoch, showing the losses."""

    def __init__(self, total: int, description: str, enabled: bool):
        super().__init__()
        self.bar = tqdm(total=total, unit="epoch", desc=description, disable=not enabled, leave=False)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.bar.set_postfix(loss=f"{logs.get('loss', math.nan):.3f}", val_loss=f"{logs.get('val_loss', math.nan):.3f}")
        self.bar.update(1)

    def on_train_end(self, logs=None):
        self.bar.close()


def train_head(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    settings: HeadSettings,
    out_dir: Path,
    *,
    progress: bool = True,
    description: str = "head",
) -> TrainedHead:
    """Train a head with Adam and early stopping on validation loss; keep the best on disk.

    ``y_*`` are integer class indices. The best epoch's weights are restored
    into the returned model and saved as ``out_dir/best.keras``; the per-epoch
    history goes to ``out_dir/history.csv``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(settings.seed)
    statistics = feature_statistics(x_train) if settings.standardize else None
    model = build_head(x_train.shape[1], n_classes, settings.dropout, statistics)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=settings.lr),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    checkpoint = out_dir / CHECKPOINT
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss", save_best_only=True),
        _EpochBar(settings.epochs, description, progress),
    ]
    weights = class_balance(y_train, n_classes) if settings.class_weight == "balanced" else None
    started = time.perf_counter()
    fit = model.fit(
        np.asarray(x_train, dtype=np.float32),
        keras.utils.to_categorical(y_train, n_classes),
        validation_data=(np.asarray(x_val, dtype=np.float32), keras.utils.to_categorical(y_val, n_classes)),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        class_weight=weights,
        callbacks=callbacks,
        shuffle=True,
        verbose=0,
    )
    seconds = time.perf_counter() - started
    history = {name: [float(v) for v in values] for name, values in fit.history.items()}
    best_epoch = int(np.argmin(history["val_loss"])) + 1
    _write_history(out_dir / HISTORY, history)
    return TrainedHead(model, history, best_epoch, len(history["val_loss"]), seconds, checkpoint)


def _write_history(path: Path, history: dict[str, list[float]]) -> None:
    names = sorted(history)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *names])
        for epoch, values in enumerate(zip(*(history[name] for name in names), strict=True), start=1):
            writer.writerow([epoch, *values])


def load_head(path: Path) -> keras.Model:
    """Load a saved head in Keras safe mode (no arbitrary code from the file)."""
    return keras.saving.load_model(path, safe_mode=True)
