"""Trains, saves and loads the classification heads that sit on cached features.

A head is [Standardize] -> Dropout -> Dense softmax (multi-label: one
sigmoid per finding, trained on binary cross-entropy). The backbone's
GlobalAveragePooling is applied at extraction time (``pooling="avg"``):
pooling has no weights and comes before the dropout, so
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
import functools
import math
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from scipy.special import expit
from tqdm.auto import tqdm

from benchmark.evaluation.metrics import multiclass_accuracy
from benchmark.run_folder import CHECKPOINT, HISTORY
from benchmark.settings import HeadSettings
from common.files import atomic_output, atomic_path
from features.data.dataset import class_balance


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
    feature_size: int,
    n_classes: int,
    dropout: float,
    statistics: tuple[np.ndarray, np.ndarray] | None = None,
    multi_label: bool = False,
) -> keras.Model:
    """[Standardize] -> Dropout -> Dense softmax over pooled backbone features (multi-label: sigmoid)."""
    activation = "sigmoid" if multi_label else "softmax"
    inputs = keras.Input(shape=(feature_size,), name="pooled_features")
    hidden = inputs if statistics is None else Standardize(*statistics, name="standardize")(inputs)
    hidden = keras.layers.Dropout(dropout, name="dropout")(hidden)
    outputs = keras.layers.Dense(n_classes, activation=activation, name=activation)(hidden)
    return keras.Model(inputs, outputs, name=f"gap_dropout_{activation}_head")


def output_layer(head: keras.Model) -> keras.layers.Dense:
    """A head's Dense output layer (``softmax``, or ``sigmoid`` for a multi-label head)."""
    return head.layers[-1]


def is_multi_label(head: keras.Model) -> bool:
    """Whether ``head`` gives one sigmoid per finding rather than a softmax over classes."""
    return output_layer(head).activation is keras.activations.sigmoid


@functools.lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, rows: int) -> np.ndarray:
    """Epoch ``epoch``'s shuffled order of ``rows`` rows, from NumPy seeded by ``(seed, epoch)`` (cached: read only)."""
    order = np.random.default_rng((seed, epoch)).permutation(rows)
    order.flags.writeable = False
    return order


def uniform_draws(key: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Float32 uniform draws in [0, 1) from NumPy seeded by ``key``: the same numbers under every Keras backend."""
    return np.random.default_rng(key).random(shape, dtype=np.float32)


def fed_dropout(inputs, draws, rate: float):
    """Dropout at ``rate`` with its uniform ``draws`` (the inputs' shape) made outside the model (``uniform_draws``).

    Keras' Dropout draws from each backend's own generator, so the same seed gives other masks under JAX than
    under TensorFlow, and other heads; fed the same draws, every backend drops the same units.
    """
    if rate <= 0:
        return inputs
    keep = 1.0 - rate
    return keras.ops.where(draws < keep, inputs / keep, 0.0)


class _HeadBank(keras.layers.Layer):
    """K independent Dropout -> Dense softmax heads as one wide Dense layer.

    Output shape ``(batch, K, n_classes)``; head k owns columns
    ``k * n_classes ... (k + 1) * n_classes`` of the kernel. One uniform draw
    per step is shared (``noise``, from ``_BankBatches``): head k keeps the inputs
    where it is below ``1 - rate_k``, exactly the mask a lone head with the same
    seed would draw. So nothing a head computes depends on the other heads, and
    the random draws cost the same for 1 head or 40.

    Softmax heads give their logits, not probabilities: Keras' TensorFlow backend takes the cross-entropy
    from a softmax's logits, the others from probabilities clipped at 1e-7, which differ (and the clipped
    one has no gradient) once a head is confidently wrong; from logits every backend computes the same.
    """

    def __init__(self, rates: list[float], n_classes: int, initial: list[np.ndarray], multi_label: bool, **kwargs):
        super().__init__(**kwargs)
        self.rates = list(rates)
        self.n_classes = n_classes
        self.multi_label = multi_label
        self.initial = initial

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

    def call(self, inputs, noise=None, training=False):
        if training and noise is not None:
            blocks = []
            # Heads come sorted by rate, so each rate's heads are one block of columns.
            for rate, start, stop in self._blocks():
                blocks.append(keras.ops.matmul(fed_dropout(inputs, noise, rate), self.kernel[:, start:stop]))
            logits = blocks[0] if len(blocks) == 1 else keras.ops.concatenate(blocks, axis=-1)
        else:
            logits = keras.ops.matmul(inputs, self.kernel)
        logits = keras.ops.reshape(logits + self.bias, (-1, len(self.rates), self.n_classes))
        return keras.ops.sigmoid(logits) if self.multi_label else logits

    def _blocks(self) -> list[tuple[float, int, int]]:
        if list(self.rates) != sorted(self.rates):
            raise ValueError("heads of a bank must be sorted by dropout rate")
        blocks = []
        for rate in sorted(set(self.rates)):
            first = self.rates.index(rate)
            count = self.rates.count(rate)
            blocks.append((rate, first * self.n_classes, (first + count) * self.n_classes))
        return blocks

    def numpy_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole bank's kernel and bias as NumPy arrays."""
        return keras.ops.convert_to_numpy(self.kernel), keras.ops.convert_to_numpy(self.bias)

    def head_weights(self, head: int, weights: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray]:
        """Kernel and bias of one head, as a lone Dense layer's weights, from the bank's ``numpy_weights()``."""
        kernel, bias = weights
        columns = slice(head * self.n_classes, (head + 1) * self.n_classes)
        return [kernel[:, columns].copy(), bias[columns].copy()]


class _BankBatches(keras.utils.PyDataset):
    """The training split's batches, epoch after epoch without end, each epoch in a new seeded order, with the
    dropout draws of each batch (``noise``).

    Both come from NumPy, seeded by ``(seed, epoch[, batch])``: Keras would shuffle arrays with TensorFlow's
    generator on one backend and NumPy's global one on another, and draw masks from each backend's own, so a head
    trained under JAX would not be the head trained under TensorFlow. Batch ``i`` is a pure function of ``i``
    (epoch ``i // per_epoch``), whatever order Keras prefetches in; fit with ``steps_per_epoch=per_epoch``.
    """

    def __init__(self, features, targets, weights, batch_size: int, seed: int, noise: bool):
        super().__init__()
        self.features, self.targets, self.weights = features, targets, weights
        self.batch_size, self.seed, self.noise = batch_size, seed, noise
        self.per_epoch = math.ceil(len(features) / batch_size)

    @property
    def num_batches(self) -> None:
        return None  # endless: the epochs are counted by steps_per_epoch

    def __getitem__(self, index: int):
        epoch, batch = divmod(index, self.per_epoch)
        first = batch * self.batch_size
        rows = epoch_order(self.seed, epoch, len(self.features))[first : first + self.batch_size]
        inputs = self.features[rows]
        if self.noise:
            inputs = (inputs, uniform_draws((self.seed, epoch, batch), inputs.shape))
        batch_data = (inputs, self.targets[rows])
        return batch_data if self.weights is None else (*batch_data, self.weights[rows])


def _summed_crossentropy(y_true, y_pred):
    """Sum over heads of each head's cross-entropy (``y_pred``: logits): every head gets exactly its own gradient."""
    return keras.ops.sum(keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=True), axis=-1)


def masked_binary_crossentropy(positive_weight: np.ndarray, negative_weight: np.ndarray):
    """Multi-label loss for Keras: per image, the known findings' weighted binary cross-entropies (NaN targets:
    unknown, left out) summed and divided by the number of findings, as ``binary_cross_entropy`` scores
    validation. The weights are 1, or ``finding_balance``'s. Works on a trailing heads axis too.
    """

    def loss(y_true, y_pred):
        known = keras.ops.logical_not(keras.ops.isnan(y_true))
        target = keras.ops.where(known, y_true, 0.0)
        p = keras.ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        terms = -(positive_weight * target * keras.ops.log(p)
                  + negative_weight * (1.0 - target) * keras.ops.log(1.0 - p))  # fmt: skip
        return keras.ops.mean(keras.ops.where(known, terms, 0.0), axis=-1)

    return loss


def multi_label_loss(y_train: np.ndarray, class_weight: str):
    """The Keras loss of a multi-label head trained on ``y_train``, balanced per finding if asked."""
    ones = np.ones(np.shape(y_train)[1], np.float32)
    return masked_binary_crossentropy(*(finding_balance(y_train) if class_weight == "balanced" else (ones, ones)))


def finding_balance(y_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label ``class_weight="balanced"``: per finding, weights making its positives and negatives weigh alike."""
    positives = np.sum(y_train == 1, axis=0).astype(np.float64)  # NaN (unknown) equals neither
    negatives = np.sum(y_train == 0, axis=0).astype(np.float64)
    known = positives + negatives
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = [np.where(count > 0, known / (2.0 * count), 1.0) for count in (positives, negatives)]
    return weights[0].astype(np.float32), weights[1].astype(np.float32)


class _PerHeadAdam(keras.optimizers.Adam):
    """Adam with each head's own learning rate, schedule and L2 penalty.

    Adam updates every weight from its own gradient history, so a learning
    rate that differs per head slice of the bank's kernel is exactly each head
    trained with its own Adam.
    """

    def __init__(self, settings: list[HeadSettings], n_classes: int, steps_per_epoch: int):
        super().__init__(learning_rate=1.0, name="per_head_adam")

        def per_column(values, dtype):
            return np.repeat(np.array(values, dtype), n_classes)

        self._base = per_column([s.lr for s in settings], np.float32)
        self._l2 = per_column([2.0 * s.l2 for s in settings], np.float32)
        self._steps = per_column([s.lr_schedule == "step" for s in settings], bool)
        self._factor = per_column([s.step_decay_factor for s in settings], np.float32)
        self._every = per_column([s.step_decay_epochs for s in settings], np.int32)
        self._steps_per_epoch = steps_per_epoch

    def _rates(self):
        """Each column's learning rate at the current step."""
        # Integer epochs: in TensorFlow's compiled step, float ``epoch / every`` gave 2 / 2 = 0.99999994 for banks
        # of 3 or more heads, so the decay came an epoch late there (and not under JAX).
        epoch = keras.ops.floor_divide(keras.ops.cast(self.iterations, "int32"), self._steps_per_epoch)
        stage = keras.ops.floor_divide(epoch, keras.ops.convert_to_tensor(self._every))
        decay = keras.ops.power(keras.ops.convert_to_tensor(self._factor), keras.ops.cast(stage, "float32"))
        return keras.ops.convert_to_tensor(self._base) * keras.ops.where(self._steps, decay, 1.0)

    def update_step(self, gradient, variable, learning_rate):
        # The bank's kernel is (features, heads x classes) and its bias (heads x classes,).
        rates = keras.ops.reshape(self._rates(), (1,) * (len(variable.shape) - 1) + (len(self._base),))
        if len(variable.shape) == 2:  # the kernel: the L2 penalty's gradient, each head's own
            # A tensor times the variable: ``ndarray * Variable`` has NumPy read the variable, which a traced JAX
            # step cannot give (TracerArrayConversionError).
            gradient = gradient + keras.ops.convert_to_tensor(self._l2) * keras.ops.convert_to_tensor(variable)
        return super().update_step(gradient, variable, rates)


def _glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean categorical cross-entropy of ``probabilities`` (rows) at integer ``labels``, clipped as Keras does.

    Multi-label ``labels`` (``(n, findings)``, NaN unknown) give ``binary_cross_entropy``.
    """
    if np.ndim(labels) == 2:
        return binary_cross_entropy(probabilities, labels)
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return float(-np.mean(np.log(picked)))


def binary_cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Multi-label loss: per image, the known findings' binary cross-entropies summed over the findings' count; mean."""
    known = ~np.isnan(labels)
    target = np.where(known, labels, 0.0)
    p = np.clip(probabilities.astype(np.float64), 1e-7, 1.0 - 1e-7)
    terms = -(target * np.log(p) + (1.0 - target) * np.log(1.0 - p))
    return float(np.sum(np.where(known, terms, 0.0)) / labels.size) if labels.size else math.nan


def _activate(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Sigmoid (multi-label) or softmax over the last axis, in NumPy."""
    if multi_label:
        return expit(logits)  # no overflow warning for large negative logits
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class _PerHeadEarlyStopping(keras.callbacks.Callback):
    """After every epoch: each head's loss and accuracy on both splits, its best weights, its stop.

    Loss and accuracy are taken in inference mode (no dropout) on the
    standardised features with NumPy, so the train and validation curves
    compare and no Keras ``predict`` call is paid per epoch. Training ends
    when every head has stopped.
    """

    def __init__(self, bank: _HeadBank, splits: dict[str, tuple[np.ndarray, np.ndarray]], patience: int, bar):
        super().__init__()
        self.bank, self.splits, self.patience, self.bar = bank, splits, patience, bar
        heads = len(bank.rates)
        self.history = [{"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []} for _ in range(heads)]
        self.best: list[tuple[float, int, list[np.ndarray] | None]] = [(math.inf, 0, None)] * heads
        self.stopped_at: list[int | None] = [None] * heads

    def on_epoch_end(self, epoch, logs=None):
        epoch += 1
        weights = self.bank.numpy_weights()
        heads, classes = len(self.bank.rates), self.bank.n_classes
        for prefix, (features, labels) in self.splits.items():
            logits = (features @ weights[0] + weights[1]).reshape(len(features), heads, classes)
            probabilities = _activate(logits, self.bank.multi_label)
            for k in range(heads):
                self.history[k][f"{prefix}loss"].append(cross_entropy(probabilities[:, k], labels))
                self.history[k][f"{prefix}accuracy"].append(multiclass_accuracy(labels, probabilities[:, k]))
        for k in range(heads):
            val_loss = self.history[k]["val_loss"][-1]
            if self.stopped_at[k]:
                continue
            if val_loss < self.best[k][0]:
                self.best[k] = (val_loss, epoch, self.bank.head_weights(k, weights))
            elif not math.isfinite(val_loss) or epoch - self.best[k][1] >= self.patience:
                self.stopped_at[k] = epoch
        self.bar.set_postfix(best_val_loss=f"{min(b[0] for b in self.best):.3f}", running=self.stopped_at.count(None))
        self.bar.update(1)
        if all(self.stopped_at):
            self.model.stop_training = True


def _training_targets(
    y_train: np.ndarray, n_classes: int, heads: int, class_weight: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """One-hot targets repeated for every head, and per-sample weights when the classes are to be balanced.

    Multi-label targets are the finding targets themselves (NaN: unknown), balanced in the loss instead.
    """
    if np.ndim(y_train) == 2:
        return np.repeat(np.asarray(y_train, np.float32)[:, None, :], heads, axis=1), None
    targets = np.repeat(keras.utils.to_categorical(y_train, n_classes)[:, None, :], heads, axis=1)
    if class_weight != "balanced":
        return targets, None
    balance = class_balance(y_train, n_classes)
    return targets, np.array([balance[c] for c in y_train], dtype=np.float32)


def _standardized(features: np.ndarray, statistics: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    if statistics is None:
        return features
    # The same float32 arithmetic as the Standardize layer.
    return (features - statistics[0].astype(np.float32)) / statistics[1].astype(np.float32)


def _compile_bank(
    settings: list[HeadSettings],
    feature_size: int,
    n_classes: int,
    n_train: int,
    statistics: tuple[np.ndarray, np.ndarray] | None,
    initial: list[np.ndarray],
    y_train: np.ndarray,
) -> tuple[keras.Model, _HeadBank]:
    """The joint model of every head (sorted by dropout rate), compiled with each head's own Adam."""
    shared, multi_label = settings[0], np.ndim(y_train) == 2
    keras.utils.set_random_seed(shared.seed)
    inputs = keras.Input(shape=(feature_size,), name="pooled_features")
    hidden = inputs if statistics is None else Standardize(*statistics, name="standardize")(inputs)
    bank = _HeadBank([s.dropout for s in settings], n_classes, initial, multi_label, name="heads")
    if any(s.dropout > 0 for s in settings):  # the dropout draws come in beside the features (_BankBatches)
        noise = keras.Input(shape=(feature_size,), name="dropout_draws")
        joint = keras.Model([inputs, noise], bank(hidden, noise))
    else:
        joint = keras.Model(inputs, bank(hidden))
    steps_per_epoch = math.ceil(n_train / shared.batch_size)
    loss = _summed_crossentropy
    if multi_label:
        per_head = multi_label_loss(y_train, shared.class_weight)

        def loss(y_true, y_pred):  # summed over heads, as _summed_crossentropy
            return keras.ops.sum(per_head(y_true, y_pred), axis=-1)

    # A whole epoch per call of the compiled step: the per-step Python and dispatch cost dominates heads this small.
    joint.compile(
        optimizer=_PerHeadAdam(settings, n_classes, steps_per_epoch),
        loss=loss,
        steps_per_execution=steps_per_epoch,
    )
    return joint, bank


def _fit_bank(
    joint: keras.Model,
    bank: _HeadBank,
    shared: HeadSettings,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    statistics: tuple[np.ndarray, np.ndarray] | None,
    *,
    progress: bool,
    description: str,
) -> tuple[_PerHeadEarlyStopping, float]:
    """Fit every head of ``bank`` until each has stopped; the stopper (histories, best weights) and the seconds."""
    (x_train, y_train), (x_val, y_val) = train, val
    targets, weights = _training_targets(y_train, bank.n_classes, len(bank.rates), shared.class_weight)
    started = time.perf_counter()
    bar = tqdm(total=shared.epochs, unit="epoch", desc=description, disable=not progress, leave=False)
    stopper = _PerHeadEarlyStopping(
        bank,
        {"": (_standardized(x_train, statistics), y_train), "val_": (_standardized(x_val, statistics), y_val)},
        shared.patience,
        bar,
    )
    batches = _BankBatches(x_train, targets, weights, shared.batch_size, shared.seed, noise=len(joint.inputs) > 1)
    joint.fit(
        batches, epochs=shared.epochs, steps_per_epoch=batches.per_epoch, shuffle=False, verbose=0, callbacks=[stopper]
    )
    bar.close()
    return stopper, time.perf_counter() - started


def _save_trained_head(
    stopper: _PerHeadEarlyStopping,
    k: int,
    settings: HeadSettings,
    statistics: tuple[np.ndarray, np.ndarray] | None,
    initial: list[np.ndarray],
    seconds: float,
    out_dir: Path,
) -> TrainedHead:
    """Head ``k`` of the bank as a lone head with its best weights, saved with its history into ``out_dir``."""
    feature_size, n_classes = initial[0].shape
    model = build_head(feature_size, n_classes, settings.dropout, statistics, stopper.bank.multi_label)
    _, best_epoch, best_weights = stopper.best[k]
    output_layer(model).set_weights(best_weights if best_weights is not None else initial)
    # A head that stopped early trained on with the others; its history ends where it stopped.
    history = stopper.history[k]
    epochs_run = stopper.stopped_at[k] or len(history["val_loss"])
    own_history = {name: values[:epochs_run] for name, values in history.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = save_head(model, out_dir)
    write_history(out_dir / HISTORY, own_history)
    return TrainedHead(settings, model, own_history, max(best_epoch, 1), epochs_run, seconds, checkpoint)


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

    The heads may differ in learning rate, dropout and L2 penalty; the rest must
    be shared (``HeadSettings.shared_part``). Every head starts from the same
    seeded initialisation and sees the same seeded batch order; each has its
    own dropout rate and Adam learning rate, trained on categorical
    cross-entropy (binary for multi-label ``y``: ``(n, findings)``, NaN unknown).
    With dropout 0 a head's result does not depend on which other heads share
    the model; with dropout its masks are its own slice of one random stream.
    Each head stops on its own when its validation loss has
    not improved for ``patience`` epochs; its best epoch's weights are restored
    and saved as ``out_dir/best.keras``, with the per-epoch history (loss and
    accuracy in inference mode, train and validation) in ``out_dir/history.csv``.
    A head whose validation loss turns NaN stops there, keeping its last finite best.
    """
    if len({s.shared_part() for s in settings}) != 1:
        raise ValueError("heads trained together must share all settings but lr, dropout and l2")
    # The bank wants heads grouped by dropout rate; results go back in the caller's order.
    order = sorted(range(len(settings)), key=lambda k: settings[k].dropout)
    settings, out_dirs = [settings[k] for k in order], [out_dirs[k] for k in order]
    shared, heads = settings[0], len(settings)
    x_train = np.asarray(x_train, dtype=np.float32)
    x_val = np.asarray(x_val, dtype=np.float32)
    feature_size = x_train.shape[1]
    statistics = feature_statistics(x_train) if shared.standardize else None
    rng = np.random.default_rng(shared.seed)
    initial = [_glorot_uniform(rng, feature_size, n_classes), np.zeros(n_classes, np.float32)]
    joint, bank = _compile_bank(settings, feature_size, n_classes, len(x_train), statistics, initial, y_train)
    stopper, elapsed = _fit_bank(
        joint, bank, shared, (x_train, y_train), (x_val, y_val), statistics, progress=progress, description=description
    )
    trained = [
        _save_trained_head(stopper, k, head, statistics, initial, elapsed / heads, out_dirs[k])
        for k, head in enumerate(settings)
    ]
    return [trained[order.index(k)] for k in range(heads)]


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


def write_history(path: Path, history: dict[str, list[float]]) -> None:
    """``history`` (name -> value per epoch) as ``history.csv``: an epoch column, then one per name."""
    names = sorted(history)
    with atomic_output(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", *names])
        for epoch, values in enumerate(zip(*(history[name] for name in names), strict=True), start=1):
            writer.writerow([epoch, *values])


def read_history(path: Path) -> dict[str, list[float]]:
    """What ``write_history`` wrote: name -> value per epoch."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    names = rows[0][1:]
    return {name: [float(row[i + 1]) for row in rows[1:]] for i, name in enumerate(names)}


def save_head(model: keras.Model, folder: Path) -> Path:
    """Save ``model`` as ``folder/best.keras`` atomically: readers see no file or the whole one."""
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / CHECKPOINT
    with atomic_path(checkpoint) as temp:  # the temp name keeps .keras, which Keras wants on what it writes
        model.save(temp)
    return checkpoint


def checkpoint_is_whole(path: Path) -> bool:
    """Whether ``path`` is a readable ``.keras`` archive whose every member matches its CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def load_head(path: Path) -> keras.Model:
    """Load a saved head in Keras safe mode (no arbitrary code from the file)."""
    return keras.saving.load_model(path, safe_mode=True)
