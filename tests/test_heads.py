"""Head training: reproducible, early-stopped on validation, checkpointed, and what the head computes."""

from pathlib import Path

import keras
import numpy as np
import pytest

from benchmark.settings import HeadSettings
from benchmark.training.heads import build_head, feature_statistics, load_head, train_head
from features.data.dataset import class_balance


def _blobs(seed: int, n: int = 90, scale: float = 1.0, noise: float = 1.5):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centers = np.random.default_rng(42).normal(0, 1, (3, 16))
    features = (centers[labels] + rng.normal(0, noise, (n, 16))) * scale
    return features.astype(np.float32), labels


def _train(tmp_path: Path, name: str, settings: HeadSettings, scale: float = 1.0, noise: float = 1.5):
    x_train, y_train = _blobs(0, scale=scale, noise=noise)
    x_val, y_val = _blobs(1, scale=scale, noise=noise)
    return train_head(x_train, y_train, x_val, y_val, 3, settings, tmp_path / name, progress=False), (x_val, y_val)


def test_same_seed_same_head(tmp_path: Path):
    settings = HeadSettings(epochs=8, patience=3, seed=7)
    first, (x_val, _) = _train(tmp_path, "a", settings)
    second, _ = _train(tmp_path, "b", settings)
    assert first.history["val_loss"] == pytest.approx(second.history["val_loss"], rel=1e-5)
    np.testing.assert_allclose(first.model.predict(x_val, verbose=0), second.model.predict(x_val, verbose=0), rtol=1e-5)


def test_best_validation_epoch_is_restored_and_checkpointed(tmp_path: Path):
    # A high learning rate on noisy blobs overfits fast, so the best epoch is not the last.
    trained, (x_val, y_val) = _train(tmp_path, "h", HeadSettings(lr=0.05, epochs=40, patience=4, dropout=0.0))
    history = trained.history["val_loss"]
    assert trained.best_epoch == int(np.argmin(history)) + 1
    assert trained.epochs_run == len(history) <= 40
    model_loss = keras.losses.categorical_crossentropy(
        keras.utils.to_categorical(y_val, 3), trained.model.predict(x_val, verbose=0)
    )
    assert float(np.mean(model_loss)) == pytest.approx(min(history), rel=1e-4)
    restored = load_head(trained.checkpoint)
    np.testing.assert_allclose(restored.predict(x_val, verbose=0), trained.model.predict(x_val, verbose=0), rtol=1e-5)
    assert (trained.checkpoint.parent / "history.csv").read_text().startswith("epoch,")


def test_standardize_rescues_tiny_features_and_changes_no_function_class(tmp_path: Path):
    tiny_raw, _ = _train(
        tmp_path, "raw", HeadSettings(lr=0.01, epochs=15, standardize=False, seed=1), scale=1e-12, noise=0.5
    )
    tiny_std, _ = _train(
        tmp_path, "std", HeadSettings(lr=0.01, epochs=15, standardize=True, seed=1), scale=1e-12, noise=0.5
    )
    assert min(tiny_raw.history["val_loss"]) == pytest.approx(np.log(3), abs=1e-3)  # stuck at chance
    assert min(tiny_std.history["val_loss"]) < np.log(3) - 0.2

    # The standardized head equals a plain head whose Dense absorbed the affine map.
    x, _ = _blobs(3)
    mean, std = feature_statistics(x)
    standardized = build_head(16, 3, 0.0, (mean, std))
    kernel, bias = standardized.get_layer("softmax").get_weights()
    plain = build_head(16, 3, 0.0)
    plain.get_layer("softmax").set_weights([kernel / std[:, None], bias - (mean / std) @ kernel])
    np.testing.assert_allclose(standardized.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-5)


def test_pooled_features_equal_global_average_pooling_of_the_feature_map():
    # The cache stores pooling="avg" outputs; the GAP -> Dropout -> Dense head sees the same vector.
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    keras.utils.set_random_seed(0)
    pooled = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3), pooling="avg")
    feature_map = keras.Model(pooled.input, pooled.layers[-2].output)
    # Called eagerly (inference mode), as predict would, without tracing a graph for each model.
    gap = keras.layers.GlobalAveragePooling2D()(feature_map(images, training=False))
    pooled_out = keras.ops.convert_to_numpy(pooled(images, training=False))
    np.testing.assert_allclose(pooled_out, keras.ops.convert_to_numpy(gap), rtol=1e-5)


def test_balanced_class_weights_by_hand():
    # 6 samples: 3 of class 0, 2 of class 1, 1 of class 2 -> 6 / (3 * count).
    assert class_balance(np.array([0, 0, 0, 1, 1, 2]), 3) == pytest.approx({0: 2 / 3, 1: 1.0, 2: 2.0})
