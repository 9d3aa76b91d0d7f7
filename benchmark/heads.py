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
from dataclasses import dataclass, fields
from pathlib import Path

import keras
import numpy as np
from tqdm.auto import tqdm

from features.dataset import class_balance

CHECKPOINT = "best.keras"
HISTORY = "history.csv"


LR_SCHEDULES = ("constant", "step")


@dataclass(frozen=True)
class HeadSettings:
    """How one head is trained.

    ``lr_schedule`` "step" multiplies the learning rate by ``step_decay_factor``
    every ``step_decay_epochs`` epochs; "constant" keeps it.
    """

    lr: float = 1e-3
    dropout: float = 0.2
    lr_schedule: str = "constant"
    epochs: int = 100
    batch_size: int = 32
    patience: int = 10
    class_weight: str = "none"
    standardize: bool = True
    step_decay_epochs: int = 10
    step_decay_factor: float = 0.5
    seed: int = 0

    def shared_part(self) -> tuple:
        """What heads trained together in one model must have in common."""
        # Heads with different schedules trained together drifted from their lone runs in a
        # test with three dropout rates, so the schedule stays a group setting for now.
        per_head = {"lr", "dropout"}
        return tuple(getattr(self, f.name) for f in fields(self) if f.name not in per_head)


@dataclass
class TrainedHead:
    """A trained head with its best weights and how training went."""

    settings: HeadSettings
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


class _HeadBank(keras.layers.Layer):
    """K independent Dropout -> Dense softmax heads as one wide Dense layer.

    Output shape ``(batch, K, n_classes)``; head k owns columns
    ``k * n_classes ... (k + 1) * n_classes`` of the kernel. One uniform draw
    per step is shared: head k keeps the inputs where it is below ``1 - rate_k``,
    exactly the mask a lone head with the same seed would draw. So nothing a
    head computes depends on the other heads, and the random draws cost the
    same for 1 head or 40.
    """

    def __init__(self, rates: list[float], n_classes: int, initial: list[np.ndarray], seed: int, **kwargs):
        super().__init__(**kwargs)
        self.rates = list(rates)
        self.n_classes = n_classes
        self.initial = initial
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        heads = len(self.rates)
        kernel, bias = self.initial
        self.kernel = self.add_weight(
            shape=(input_shape[-1], heads * self.n_classes),
            initializer=keras.initializers.Constant(np.tile(kernel, (1, heads))),
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=(heads * self.n_classes,), initializer=keras.initializers.Constant(np.tile(bias, heads)), name="bias"
        )

    def call(self, inputs, training=False):
        if training:
            noise = keras.random.uniform(keras.ops.shape(inputs), seed=self.seed_generator, dtype=inputs.dtype)
            logits = 0.0
            for rate in sorted(set(self.rates)):
                keep = 1.0 - rate
                dropped = keras.ops.where(noise < keep, inputs / keep, 0.0)
                columns = np.repeat([r == rate for r in self.rates], self.n_classes).astype("float32")
                logits = logits + keras.ops.matmul(dropped, self.kernel) * columns
        else:
            logits = keras.ops.matmul(inputs, self.kernel)
        logits = keras.ops.reshape(logits + self.bias, (-1, len(self.rates), self.n_classes))
        return keras.ops.softmax(logits, axis=-1)

    def head_weights(self, head: int) -> list[np.ndarray]:
        """Kernel and bias of one head, as a lone Dense layer's weights."""
        columns = slice(head * self.n_classes, (head + 1) * self.n_classes)
        return [keras.ops.convert_to_numpy(self.kernel)[:, columns], keras.ops.convert_to_numpy(self.bias)[columns]]


def _summed_crossentropy(y_true, y_pred):
    """Sum over heads of each head's cross-entropy: every head gets exactly its own gradient."""
    return keras.ops.sum(keras.losses.categorical_crossentropy(y_true, y_pred), axis=-1)


class _PerHeadAdam(keras.optimizers.Adam):
    """Adam with each head's own learning rate and schedule.

    Adam updates every weight from its own gradient history, so a learning
    rate that differs per head slice of the bank's kernel is exactly each head
    trained with its own Adam.
    """

    def __init__(self, settings: list[HeadSettings], n_classes: int, steps_per_epoch: int):
        super().__init__(learning_rate=1.0, name="per_head_adam")

        def per_column(values, dtype):
            return np.repeat(np.array(values, dtype), n_classes)

        self._base = per_column([s.lr for s in settings], np.float32)
        self._steps = per_column([s.lr_schedule == "step" for s in settings], bool)
        self._factor = per_column([s.step_decay_factor for s in settings], np.float32)
        self._every = per_column([s.step_decay_epochs for s in settings], np.float32)
        self._steps_per_epoch = steps_per_epoch

    def update_step(self, gradient, variable, learning_rate):
        epoch = keras.ops.floor(keras.ops.cast(self.iterations, "float32") / self._steps_per_epoch)
        decay = keras.ops.power(self._factor, keras.ops.floor(epoch / self._every))
        rates = self._base * keras.ops.where(self._steps, decay, keras.ops.ones_like(decay))
        # The bank's kernel is (features, heads x classes) and its bias (heads x classes,).
        rates = keras.ops.reshape(rates, (1,) * (len(variable.shape) - 1) + (len(self._base),))
        return super().update_step(gradient, variable, rates)


def _glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)


def _cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.mean(np.log(picked)))


def train_heads(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    settings: list[HeadSettings],
    out_dirs: list[Path],
    *,
    progress: bool = True,
    description: str = "heads",
) -> list[TrainedHead]:
    """Train one head per ``settings`` entry, all in one Keras model, and save each.

    The heads may differ in learning rate and dropout; the rest must
    be shared (``HeadSettings.shared_part``). Every head starts from the same
    seeded initialisation and sees the same seeded batch order; each has its
    own dropout rate and Adam learning rate, trained on categorical
    cross-entropy. With dropout 0 a head's result does not depend on which
    other heads share the model; with dropout its masks are its own slice of
    one random stream. Each head stops on its own when its validation loss has
    not improved for ``patience`` epochs; its best epoch's weights are restored
    and saved as ``out_dir/best.keras``, with the per-epoch history (loss and
    accuracy in inference mode, train and validation) in ``out_dir/history.csv``.
    A head whose validation loss turns NaN stops there, keeping its last finite best.
    """
    if len({s.shared_part() for s in settings}) != 1:
        raise ValueError("heads trained together must share all settings but lr and dropout")
    shared, heads = settings[0], len(settings)
    x_train = np.asarray(x_train, dtype=np.float32)
    x_val = np.asarray(x_val, dtype=np.float32)
    feature_size = x_train.shape[1]
    statistics = feature_statistics(x_train) if shared.standardize else None
    rng = np.random.default_rng(shared.seed)
    initial = [_glorot_uniform(rng, feature_size, n_classes), np.zeros(n_classes, np.float32)]

    keras.utils.set_random_seed(shared.seed)
    inputs = keras.Input(shape=(feature_size,), name="pooled_features")
    hidden = inputs if statistics is None else Standardize(*statistics, name="standardize")(inputs)
    bank = _HeadBank([s.dropout for s in settings], n_classes, initial, shared.seed, name="heads")
    joint = keras.Model(inputs, bank(hidden))
    joint.compile(
        optimizer=_PerHeadAdam(settings, n_classes, math.ceil(len(x_train) / shared.batch_size)),
        loss=_summed_crossentropy,
    )
    targets = np.repeat(keras.utils.to_categorical(y_train, n_classes)[:, None, :], heads, axis=1)
    weights = None
    if shared.class_weight == "balanced":
        balance = class_balance(y_train, n_classes)
        weights = np.array([balance[c] for c in y_train], dtype=np.float32)

    history = [{"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []} for _ in settings]
    best: list[tuple[float, int, list[np.ndarray] | None]] = [(math.inf, 0, None)] * heads
    stopped_at: list[int | None] = [None] * heads
    started = time.perf_counter()
    bar = tqdm(total=shared.epochs, unit="epoch", desc=description, disable=not progress, leave=False)
    for epoch in range(1, shared.epochs + 1):
        order = rng.permutation(len(x_train))
        joint.fit(
            x_train[order],
            targets[order],
            sample_weight=None if weights is None else weights[order],
            batch_size=shared.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        # Loss and accuracy of both splits in inference mode (no dropout), so the curves compare.
        probabilities_of = {
            "": joint.predict(x_train, batch_size=4096, verbose=0),
            "val_": joint.predict(x_val, batch_size=4096, verbose=0),
        }
        for k in range(heads):
            for split, labels in (("", y_train), ("val_", y_val)):
                probabilities = probabilities_of[split][:, k]
                history[k][f"{split}loss"].append(_cross_entropy(probabilities, labels))
                history[k][f"{split}accuracy"].append(float(np.mean(probabilities.argmax(1) == labels)))
            val_loss = history[k]["val_loss"][-1]
            if stopped_at[k]:
                continue
            if val_loss < best[k][0]:
                best[k] = (val_loss, epoch, bank.head_weights(k))
            elif not math.isfinite(val_loss) or epoch - best[k][1] >= shared.patience:
                stopped_at[k] = epoch
        bar.set_postfix(best_val_loss=f"{min(b[0] for b in best):.3f}", running=stopped_at.count(None))
        bar.update(1)
        if all(stopped_at):
            break
    bar.close()
    seconds = (time.perf_counter() - started) / heads

    trained = []
    for k, head in enumerate(settings):
        model = build_head(feature_size, n_classes, head.dropout, statistics)
        _, best_epoch, best_weights = best[k]
        model.get_layer("softmax").set_weights(best_weights if best_weights is not None else initial)
        # A head that stopped early trained on with the others; its history ends where it stopped.
        epochs_run = stopped_at[k] or len(history[k]["val_loss"])
        own_history = {name: values[:epochs_run] for name, values in history[k].items()}
        out_dirs[k].mkdir(parents=True, exist_ok=True)
        checkpoint = out_dirs[k] / CHECKPOINT
        model.save(checkpoint)
        _write_history(out_dirs[k] / HISTORY, own_history)
        trained.append(TrainedHead(head, model, own_history, max(best_epoch, 1), epochs_run, seconds, checkpoint))
    return trained


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
    """Train and save a single head (``train_heads`` with one entry)."""
    return train_heads(
        x_train, y_train, x_val, y_val, n_classes, [settings], [out_dir], progress=progress, description=description
    )[0]


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
