"""Fine-tuning: discriminative learning rates, frozen BatchNormalization, progressive resizing, resumption."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import make_kermany, run_small_benchmark

from backbones import get_backbone
from benchmark.evaluation.verify import verify
from benchmark.training import finetune
from benchmark.training.finetune import DiscriminativeAdam, augmenter, layer_multipliers, unfreeze_top
from benchmark.training.heads import build_head


def _two_layer_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4, name="early")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="late")(hidden))


def test_each_layer_learns_at_its_own_rate():
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(16, 2)).astype(np.float32)
    steps = {}
    for factor in (1.0, 0.5, 0.0):
        model = _two_layer_model()
        early = model.get_layer("early").kernel
        multipliers = {early.path: factor}
        model.compile(optimizer=DiscriminativeAdam(multipliers, learning_rate=0.01), loss="mse")
        before = keras.ops.convert_to_numpy(early).copy()
        late_before = keras.ops.convert_to_numpy(model.get_layer("late").kernel).copy()
        model.train_on_batch(x, y)
        steps[factor] = np.abs(keras.ops.convert_to_numpy(early) - before)
        late_step = np.abs(keras.ops.convert_to_numpy(model.get_layer("late").kernel) - late_before)
        assert late_step.mean() > 0.005  # the default rate everywhere else
    # Adam's first step is lr * sign(gradient): the factor scales it exactly.
    np.testing.assert_allclose(steps[0.5], 0.5 * steps[1.0], rtol=1e-3, atol=1e-7)
    assert steps[0.0].max() == 0.0


def test_top_layers_unfreeze_and_batch_normalization_never_does():
    spec = get_backbone("MobileNetV2")
    backbone = spec.constructor(weights=None, include_top=False, input_shape=(32, 32, 3), pooling="avg")
    unfrozen = unfreeze_top(backbone, "6")
    weighted = [layer for layer in backbone.layers if layer.weights]
    top_six = weighted[-6:]
    assert unfrozen == [layer for layer in reversed(top_six) if not isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.trainable for layer in unfrozen)
    assert not any(layer.trainable for layer in weighted[:-6])
    everything = unfreeze_top(backbone, "all")
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in everything)
    assert len(everything) == sum(not isinstance(layer, keras.layers.BatchNormalization) for layer in weighted)
    factors = layer_multipliers(everything, 0.1)
    top, bottom = everything[0].trainable_weights[0].path, everything[-1].trainable_weights[0].path
    assert factors[top] == pytest.approx(0.1) and factors[bottom] == pytest.approx(0.01)
    ordered = [factors[layer.trainable_weights[0].path] for layer in everything]
    assert ordered == sorted(ordered, reverse=True)  # earlier layers learn more slowly


@pytest.mark.slow
def test_fine_tuning_keeps_batch_normalization_statistics_and_changes_the_top():
    spec = get_backbone("MobileNetV2")
    head = build_head(spec.feature_size, 3, 0.2)
    model, backbone = finetune.build_finetuned(spec, 32, "none", 0, head)
    unfrozen = unfreeze_top(backbone, "all")
    model.compile(optimizer=DiscriminativeAdam(layer_multipliers(unfrozen, 0.1), learning_rate=1e-3),
                  loss="sparse_categorical_crossentropy")  # fmt: skip
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = [keras.ops.convert_to_numpy(n.moving_mean).copy() for n in norms]
    kernel_before = keras.ops.convert_to_numpy(unfrozen[0].trainable_weights[0]).copy()
    images = spec.preprocess(np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32))
    model.fit(images, np.arange(8) % 3, epochs=2, batch_size=4, verbose=0)
    for norm, mean in zip(norms, before, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(norm.moving_mean), mean)
    assert not np.array_equal(keras.ops.convert_to_numpy(unfrozen[0].trainable_weights[0]), kernel_before)


def test_augmentation_changes_images_within_range():
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    out = keras.ops.convert_to_numpy(augmenter(0)(images, training=True))
    assert out.shape == images.shape and not np.allclose(out, images)
    assert np.isfinite(out).all()


@pytest.fixture(scope="module")
def finetuned_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("finetune")
    root = make_kermany(base / "data", {"train": 12, "val": 2, "test": 6})
    extra = ("--finetune", "--finetune-layers", "10", "--finetune-epochs", "2", "--finetune-sizes", "32", "48",
             "--augment")  # fmt: skip
    assert run_small_benchmark(root, base, *extra) == 0
    return root, base, extra


@pytest.mark.slow
def test_fine_tuned_rows_sit_beside_the_frozen_ones(finetuned_run):
    _, base, _ = finetuned_run
    board = pd.read_csv(base / "results" / "leaderboard.csv")
    assert set(board["backbone"]) - {"ensemble"} == {"MobileNetV2", "MobileNetV2-ft"}
    tuned = board[board["backbone"] == "MobileNetV2-ft"].iloc[0]
    assert tuned["image_size"] == 48  # progressive resizing ended at the larger size
    assert "fine-tuned 10 layers, sizes 32→48, augmented" in tuned["weights"]
    assert 1 <= tuned["best_epoch"] <= tuned["epochs_run"] <= 4
    markdown = (base / "results" / "leaderboard.md").read_text()
    table = markdown.split("### normal_vs_pneumonia")[1].split("###")[0]
    assert "| MobileNetV2-ft" in table and "| MobileNetV2 " in table
    assert verify(base / "results") == []


@pytest.mark.slow
def test_a_rerun_reads_fine_tuned_results_back(finetuned_run, monkeypatch):
    root, base, extra = finetuned_run
    first = pd.read_csv(base / "results" / "leaderboard.csv")

    def refuse(*args, **kwargs):
        raise AssertionError("fine-tuned again")

    monkeypatch.setattr(finetune, "finetune_one", refuse)
    assert run_small_benchmark(root, base, *extra) == 0
    second = pd.read_csv(base / "results" / "leaderboard.csv")
    columns = ["backbone", "task", "sensitivity", "specificity", "auc", "op_threshold"]
    pd.testing.assert_frame_equal(first[columns], second[columns])


@pytest.mark.slow
def test_a_damaged_fine_tuned_weights_file_is_fine_tuned_again(finetuned_run, monkeypatch):
    root, base, extra = finetuned_run
    (weights,) = (base / "results" / "finetune").glob("*/model.weights.h5")
    weights.write_bytes(weights.read_bytes()[:-64])
    calls = []
    real = finetune.finetune_one
    monkeypatch.setattr(finetune, "finetune_one", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert run_small_benchmark(root, base, *extra) == 0
    assert calls == [1]
    record = json.loads((weights.parent / "result.json").read_text())
    assert record["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--finetune-layers", "top"], "positive number of layers or 'all'"),
        (["--finetune-sizes", "48", "32"], "must grow"),
        (["--finetune-sizes", "16"], "minimum of 32 px"),
        (["--finetune-lr-factor", "2"], "(0, 1]"),
    ],
)
def test_bad_fine_tuning_settings_fail_before_any_work(kermany_root: Path, tmp_path: Path, capsys, args, message):
    assert run_small_benchmark(kermany_root, tmp_path, "--finetune", *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_predict_serves_the_fine_tuned_model_when_asked(finetuned_run, tmp_path: Path, capsys):
    from benchmark import predict

    root, base, _ = finetuned_run
    image = sorted((root / "test" / "PNEUMONIA").iterdir())[0]
    assert predict.main([str(base / "results"), str(image), "--backbone", "MobileNetV2-ft",
                         "--out", str(tmp_path)]) == 0  # fmt: skip
    assert "model: MobileNetV2 48 px" in capsys.readouterr().out
    mine = pd.read_csv(tmp_path / "predictions.csv").iloc[0]
    theirs = pd.read_csv(base / "results" / "predictions.csv")
    theirs = theirs[(theirs["backbone"] == "MobileNetV2-ft") & theirs["path"].str.endswith(image.name)].iloc[0]
    for label in ("normal", "bacterial", "viral"):
        assert mine[f"p_{label}"] == pytest.approx(theirs[f"p_{label}"], abs=1e-5)
    assert predict.choose_head(base / "results")["backbone"] == "MobileNetV2"  # by default the frozen heads
