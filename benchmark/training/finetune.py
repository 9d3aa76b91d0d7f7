"""Fine-tunes each backbone's selected frozen head end to end: the top of the backbone trains with it on images.

For each backbone's selected frozen head (first seed), the backbone is rebuilt
with the same weights and the head is put on top. Then:

* the top ``layers`` layers (or all) are unfrozen; BatchNormalization always
  runs in inference mode (the backbone is called with ``training=False``) and
  its statistics and scales stay frozen, as small medical batches would
  corrupt ImageNet's statistics;
* discriminative learning rates: the head learns at ``lr``, the top unfrozen
  layer at ``lr * lr_factor``, falling geometrically to ``lr * lr_factor / 10``
  at the lowest unfrozen layer (``DiscriminativeAdam``);
* progressive resizing: with several ``sizes`` the same weights train at each
  size in turn, small first (every backbone here is fully convolutional);
* optional light augmentation (flip, rotation, zoom, brightness, contrast);
* early stopping on validation loss, best weights kept; the test split is
  predicted once at the end;
* the same numbers under every Keras backend (to float rounding): the batch
  order and the dropout draws come from NumPy (``ImageBatches``, ``FedDropout``)
  and the cross-entropy from the logits. Augmentation is the exception: Keras'
  random layers draw from each backend's own generator.

Each result is stored in ``RESULTS/finetune/<id>/`` (weights, history, and
``result.json`` written last), keyed by everything that makes it, so a rerun
skips finished ones. The rows join the leaderboard as ``<backbone>-ft``
beside the frozen-feature head they started from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras
import numpy as np

from backbones import BackboneSpec, build_backbone, get_backbone, resolve_weights
from benchmark.records import HeadResult
from benchmark.run_folder import CHECKPOINT, RESULT_FILE, WEIGHTS_FILE, RunFolder, finetuned_name
from benchmark.settings import FinetuneRun, FinetuneSettings
from benchmark.training.heads import (
    epoch_order,
    fed_dropout,
    is_multi_label,
    load_head,
    multi_label_loss,
    output_layer,
    uniform_draws,
)
from common.executors import Executor, LocalExecutor
from common.files import DamagedFileError, atomic_path, atomic_write_sealed_json, read_sealed_json, sha256_file
from features.cache import cache_key
from features.data.dataset import Dataset, class_balance
from features.pixels import PixelCache, PixelReader
from features.settings import DicomSettings


class DiscriminativeAdam(keras.optimizers.Adam):
    """Adam with a learning-rate multiplier per variable (``multipliers``: variable path -> factor).

    Keras applies one learning rate to every variable; ``update_step`` receives
    it per variable, so scaling it there gives each layer its own rate on every backend.
    """

    def __init__(self, multipliers: dict[str, float], **kwargs):
        super().__init__(**kwargs)
        self._multipliers_by_path = dict(multipliers)
        self._factors: list[float] = []

    def build(self, variables):
        super().build(variables)
        self._factors = [self._multipliers_by_path.get(v.path, 1.0) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[self._get_variable_index(variable)]
        return super().update_step(gradient, variable, learning_rate * factor)


def unfreeze_top(backbone: keras.Model, layers: str) -> list[keras.layers.Layer]:
    """Make the top ``layers`` weighted layers (or ``all``) trainable, never BatchNormalization.

    Returns the unfrozen layers, top first.
    """
    weighted = [layer for layer in backbone.layers if layer.weights]
    chosen = weighted if layers == "all" else weighted[-int(layers) :]
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = False
    unfrozen = []
    for layer in reversed(chosen):
        if isinstance(layer, keras.layers.BatchNormalization):
            continue
        layer.trainable = True
        unfrozen.append(layer)
    return unfrozen


def layer_multipliers(unfrozen: list[keras.layers.Layer], lr_factor: float) -> dict[str, float]:
    """Variable path -> learning-rate factor: ``lr_factor`` at the top layer, 10x lower at the lowest."""
    multipliers = {}
    for rank, layer in enumerate(unfrozen):
        depth = rank / (len(unfrozen) - 1) if len(unfrozen) > 1 else 0.0
        for variable in layer.trainable_weights:
            multipliers[variable.path] = lr_factor * 10.0 ** (-depth)
    return multipliers


def augmenter(seed: int) -> keras.Sequential:
    """Light augmentation on 0..255 RGB batches: flip, +-5 degrees, +-10% zoom, brightness, contrast."""
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(5 / 360, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
            keras.layers.RandomBrightness(0.1, value_range=(0, 255), seed=seed + 3),
            keras.layers.RandomContrast(0.1, value_range=(0, 255), seed=seed + 4),
        ],
        name="augmentation",
    )


class ImageBatches(keras.utils.PyDataset):
    """Batches of preprocessed images (rows of a pixel cache) and labels.

    With ``shuffle_seed`` (training) the batches run on, epoch after epoch, without end: fit with
    ``steps_per_epoch=per_epoch``. Each epoch has its own order, and with ``draws`` each image comes with that
    many uniform draws for ``FedDropout`` (zeros without ``shuffle_seed``), both from NumPy seeded by the seed,
    epoch and batch. So batch ``i`` depends on ``i`` only: Keras shuffles batches with Python's ``random`` and
    prefetches differently on each backend; these batches are the same on every backend.
    """

    def __init__(
        self,
        reader: PixelReader,
        rows: np.ndarray,
        labels: np.ndarray,
        preprocess: Callable,
        batch_size: int,
        *,
        shuffle_seed: int | None = None,
        augment: keras.Sequential | None = None,
        draws: int = 0,
    ):
        super().__init__()
        self.reader, self.rows, self.labels = reader, np.asarray(rows), np.asarray(labels)
        self.preprocess, self.batch_size, self.augment = preprocess, batch_size, augment
        self.shuffle_seed, self.draws = shuffle_seed, draws
        self.per_epoch = math.ceil(len(self.rows) / batch_size)

    @property
    def num_batches(self) -> int | None:
        return self.per_epoch if self.shuffle_seed is None else None

    def __getitem__(self, index: int):
        epoch, batch = divmod(index, self.per_epoch)
        order = np.arange(len(self.rows)) if self.shuffle_seed is None else epoch_order(self.shuffle_seed, epoch,
                                                                                         len(self.rows))  # fmt: skip
        picked = order[batch * self.batch_size : (batch + 1) * self.batch_size]
        images = np.stack([self.reader.read(int(r), int(r) + 1)[0] for r in self.rows[picked]]).astype(np.float32)
        if self.augment is not None:
            images = keras.ops.convert_to_numpy(self.augment(images, training=True))
        inputs = self.preprocess(np.clip(images, 0, 255))
        if self.draws:
            shape = (len(picked), self.draws)
            noise = np.zeros(shape, np.float32) if self.shuffle_seed is None else uniform_draws(
                (self.shuffle_seed, epoch, batch), shape)  # fmt: skip
            inputs = (inputs, noise)
        return inputs, self.labels[picked]


class _Logits(keras.layers.Layer):
    """A softmax Dense layer's logits, computed from its own (shared) weights."""

    def __init__(self, dense: keras.layers.Dense, **kwargs):
        super().__init__(**kwargs)
        self.dense = dense

    def call(self, inputs):
        return keras.ops.matmul(inputs, self.dense.kernel) + self.dense.bias


class FedDropout(keras.layers.Layer):
    """A head's Dropout while it fine-tunes, its uniform draws a second input (``fed_dropout``)."""

    def __init__(self, rate: float, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate

    def call(self, inputs, draws, training=False):
        return fed_dropout(inputs, draws, self.rate) if training else inputs


def build_finetuned(
    spec: BackboneSpec, size: int, weights: str, seed: int, head: keras.Model
) -> tuple[keras.Model, keras.Model]:
    """``(backbone + head model, backbone)``: the architecture a fine-tuned ``model.weights.h5`` loads into."""
    backbone = build_backbone(spec, size, resolve_weights(spec, weights, size, seed=seed), seed=seed)
    inputs = keras.Input((size, size, 3))
    # training=False keeps every BatchNormalization in inference mode, whatever fit() asks.
    outputs = head(backbone(inputs, training=False))
    return keras.Model(inputs, outputs, name=f"{spec.name}_finetuned"), backbone


@dataclass
class _StageRecord:
    """The history of every stage of progressive resizing so far, and the best epoch of the latest stage."""

    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    epochs_run: int = 0
    best_val_loss: float = math.inf

    def add(self, stage: dict[str, list]) -> None:
        """Append one stage's Keras history; epochs count on from the stages before it."""
        for name, values in stage.items():
            self.history.setdefault(name, []).extend(float(v) for v in values)
        # Each stage restores its best weights, so the latest stage's best is the model's.
        stage_best = int(np.argmin(stage["val_loss"]))
        self.best_val_loss = float(stage["val_loss"][stage_best])
        self.best_epoch, self.epochs_run = self.epochs_run + stage_best + 1, self.epochs_run + len(stage["val_loss"])


def _compiled_stage(
    spec: BackboneSpec,
    size: int,
    weights: str,
    settings: FinetuneSettings,
    head: keras.Model,
    weights_state: list[np.ndarray] | None,
    y_train: np.ndarray | None = None,
) -> tuple[keras.Model, keras.Model]:
    """The backbone + head at ``size``, carrying on from ``weights_state``, its top unfrozen: ``(the model that
    trains, compiled (``_training_model``), the model that predicts and is saved)``, sharing every weight."""
    model, backbone = build_finetuned(spec, size, weights, settings.seed, head)
    if weights_state is not None:
        model.set_weights(weights_state)  # progressive resizing: the same weights, a larger input
    unfrozen = unfreeze_top(backbone, settings.layers)
    multi_label = y_train is not None and np.ndim(y_train) == 2
    # Multi-label: the frozen heads' masked binary cross-entropy (its accuracy would count unknown findings).
    loss = (
        multi_label_loss(y_train, settings.class_weight)
        if multi_label
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    trainer = _training_model(model, backbone, head, size)
    trainer.compile(
        optimizer=DiscriminativeAdam(layer_multipliers(unfrozen, settings.lr_factor), learning_rate=settings.lr),
        loss=loss,
        metrics=[] if multi_label else ["accuracy"],
    )
    return trainer, model


def _training_model(model: keras.Model, backbone: keras.Model, head: keras.Model, size: int) -> keras.Model:
    """``model`` (``build_finetuned``'s) as it trains, on the same layers and weights, but with the head's Dropout
    (the head is ``build_head``'s chain) a ``FedDropout`` whose draws come in beside the images, and a softmax
    head giving its logits: from them the cross-entropy is the same on every backend (see ``_HeadBank``)."""
    images = keras.Input((size, size, 3))
    hidden = backbone(images, training=False)  # as in build_finetuned
    draws = keras.Input(hidden.shape[1:], name="dropout_draws")
    dropping = any(isinstance(layer, keras.layers.Dropout) and layer.rate > 0 for layer in head.layers)
    for layer in head.layers:
        if isinstance(layer, keras.layers.Dropout):
            hidden = FedDropout(layer.rate, name=layer.name)(hidden, draws) if dropping else hidden
        elif layer is output_layer(head) and not is_multi_label(head):
            hidden = _Logits(layer, name=f"{layer.name}_logits")(hidden)
        elif not isinstance(layer, keras.layers.InputLayer):
            hidden = layer(hidden)
    return keras.Model([images, draws] if dropping else images, hidden, name=f"{model.name}_training")


def _fit_stage(
    model: keras.Model,
    reader: PixelReader,
    rows: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    preprocess: Callable,
    settings: FinetuneSettings,
    stage: int,
    class_weight: dict[int, float] | None,
    progress: bool,
) -> dict[str, list]:
    """Fit ``model`` (``_training_model``) on the training split with early stopping on validation; the history."""
    augment = augmenter(settings.seed + stage) if settings.augment else None
    draws = model.inputs[1].shape[-1] if len(model.inputs) > 1 else 0
    train = ImageBatches(reader, rows["train"], labels["train"], preprocess, settings.batch_size,
                         shuffle_seed=settings.seed + stage, augment=augment, draws=draws)  # fmt: skip
    val = ImageBatches(reader, rows["val"], labels["val"], preprocess, settings.batch_size, draws=draws)
    stop = keras.callbacks.EarlyStopping(patience=settings.patience, restore_best_weights=True)
    fitted = model.fit(train, validation_data=val, epochs=settings.epochs, steps_per_epoch=train.per_epoch,
                       shuffle=False, class_weight=class_weight, callbacks=[stop],
                       verbose=2 if progress else 0)  # fmt: skip
    return fitted.history


def finetune_one(
    frozen: HeadResult,
    dataset: Dataset,
    settings: FinetuneSettings,
    *,
    weights: str,
    heads_dir: Path,
    pixel_cache: PixelCache,
    out_dir: Path,
    progress: bool = True,
) -> HeadResult:
    """Fine-tune ``frozen``'s backbone and head end to end; return its leaderboard entry.

    With several ``settings.sizes`` the same weights train at each size in turn; the
    validation and test splits are predicted by the model of the last size.
    """
    spec = get_backbone(frozen.backbone)
    sizes = settings.sizes or (frozen.image_size,)
    # Before the head is loaded: its Dropout draws its seed from Python's random as it is built, so without
    # this the fine-tuned model depended on what the process had done before (a rerun, a cluster task).
    keras.utils.set_random_seed(settings.seed)
    head = load_head(heads_dir / frozen.head_id / CHECKPOINT)
    paths = [record.path for record in dataset.records]
    labels = {split: dataset.labels(split) for split in ("train", "val", "test")}
    rows = {split: dataset.indices(split) for split in ("train", "val", "test")}
    balanced = settings.class_weight == "balanced" and not dataset.multi_label  # multi-label: in the loss
    class_weight = class_balance(labels["train"], len(dataset.classes)) if balanced else None
    stages = _StageRecord()
    weights_state = None
    for stage, size in enumerate(sizes):
        trainer, model = _compiled_stage(spec, size, weights, settings, head, weights_state, labels["train"])
        reader, _ = pixel_cache.build(size, dataset.root, paths, progress=progress)
        with reader:
            fitted = _fit_stage(trainer, reader, rows, labels, spec.preprocess, settings, stage, class_weight,
                                progress)  # fmt: skip
            stages.add(fitted)
            weights_state = model.get_weights()
            probabilities = {
                split: model.predict(
                    ImageBatches(reader, rows[split], labels[split], spec.preprocess, settings.batch_size), verbose=0
                )
                for split in ("val", "test")
            }
    with atomic_path(out_dir / WEIGHTS_FILE) as temp:  # the result record's hash must match a whole file
        model.save_weights(temp)
    return _finetuned_result(frozen, settings, sizes, out_dir.name, stages, probabilities)


def _finetuned_result(
    frozen: HeadResult,
    settings: FinetuneSettings,
    sizes: tuple[int, ...],
    head_id: str,
    stages: _StageRecord,
    probabilities: dict[str, np.ndarray],
) -> HeadResult:
    """The leaderboard entry of a fine-tuned model, named ``<backbone>-ft`` beside the head it started from."""
    description = f"{settings.layers} layers" if settings.layers != "all" else "all layers"
    return HeadResult(
        backbone=finetuned_name(frozen.backbone),
        image_size=sizes[-1],
        settings=frozen.settings,
        weights=f"{frozen.weights}; fine-tuned {description}, sizes {'→'.join(map(str, sizes))}"
        + (", augmented" if settings.augment else ""),
        head_id=head_id,
        best_epoch=stages.best_epoch,
        epochs_run=stages.epochs_run,
        best_val_loss=stages.best_val_loss,
        history=stages.history,
        probabilities=probabilities,
    )


def finetune_winners(
    winners: list[HeadResult], dataset: Dataset, run: FinetuneRun, executor: Executor | None = None
) -> list[HeadResult]:
    """Fine-tune each backbone's selected Adam-trained head (first seed); finished ones are read back, not redone.

    With a distributed ``executor`` each head is one task (given a GPU where the cluster has them), which reads
    the pixel cache and writes its results folder on the shared filesystem; only its leaderboard entry comes back.
    """
    firsts: dict[str, HeadResult] = {}
    for winner in sorted(winners, key=lambda w: w.settings.seed):
        if winner.settings.kind == "keras":  # the probes are the frozen baseline, not a start for fine-tuning
            firsts.setdefault(winner.backbone, winner)
    split_key = {split: [r.path for r in dataset.split(split)] for split in ("train", "val", "test")}
    results_folder = RunFolder(run.results_dir)
    results: list[HeadResult | None] = []
    pending: list[tuple[int, HeadResult, Path]] = []
    for frozen in firsts.values():
        # The weights' identity (their SHA-256 for a file), not their path: two spellings of one file are one run.
        key = cache_key({"from": frozen.head_id, "settings": asdict(run.model), "weights": frozen.weights,
                         "splits": split_key})  # fmt: skip
        folder = results_folder.finetuned(f"{finetuned_name(frozen.backbone)}-{key[:10]}")
        results.append(_stored_result(folder))
        if results[-1] is None:
            pending.append((len(results) - 1, frozen, folder))
    executor = executor or LocalExecutor()
    if executor.distributed:
        dataset = executor.share(replace(dataset, root=Path(dataset.root).resolve()))
    done = executor.map(_finetune_and_record, [(frozen, dataset, run, folder) for _, frozen, folder in pending],
                        gpu=True)  # fmt: skip
    for (index, _, _), result in zip(pending, done, strict=True):
        results[index] = result
    return results


def _finetune_and_record(frozen: HeadResult, dataset: Dataset, run: FinetuneRun, folder: Path) -> HeadResult:
    """Fine-tune ``frozen`` into ``folder`` and write its ``result.json`` last; its leaderboard entry."""
    if run.progress:
        print(f"fine-tuning {frozen.backbone} from head {frozen.head_id}")
    pixels = PixelCache(run.cache_dir, DicomSettings(*run.dicom))
    result = finetune_one(frozen, dataset, run.model, weights=run.weights, heads_dir=RunFolder(run.results_dir).heads,
                          pixel_cache=pixels, out_dir=folder, progress=run.progress)  # fmt: skip
    record = dict(result.to_json(), from_head=frozen.head_id, weights_sha256=sha256_file(folder / WEIGHTS_FILE))
    atomic_write_sealed_json(folder / RESULT_FILE, record, (WEIGHTS_FILE,))
    return result


def _stored_result(folder: Path) -> HeadResult | None:
    """A finished fine-tuning result, sealed with its weights' SHA-256 (predict loads them), else None (redo it).

    A record or weights file changed since it was written is reported in one line, never used.
    """
    try:
        return HeadResult.from_json(read_sealed_json(folder / RESULT_FILE))
    except FileNotFoundError:
        return None
    except DamagedFileError as damage:
        print(f"warning: {damage}; fine-tuning {folder.name} again")
    except (KeyError, TypeError, ValueError) as error:
        print(f"warning: {folder / RESULT_FILE} is not a fine-tuning record ({error}); fine-tuning {folder.name} again")
    return None
