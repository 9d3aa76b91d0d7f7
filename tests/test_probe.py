"""The logistic-regression probe, and the L2 penalty of the Adam-trained heads that it is the baseline for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from benchmark.settings import HeadSettings, probe_settings
from benchmark.training.heads import load_head, train_heads
from benchmark.training.probe import fit_probes


def _blobs(seed: int, n: int, classes: int = 3, width: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centers = np.random.default_rng(7).normal(0, 1, (classes, width))
    return (centers[labels] * 3 + 5 + rng.normal(0, 2.0, (n, width))).astype(np.float32), labels


@pytest.mark.parametrize("classes", [2, 3])
def test_probe_is_scikit_learns_logistic_regression_as_a_keras_head(classes: int, tmp_path: Path):
    x_train, y_train = _blobs(0, 120, classes)
    x_val, y_val = _blobs(1, 60, classes)
    settings = probe_settings((0.01, 1.0), HeadSettings())
    probes = fit_probes(x_train, y_train, x_val, y_val, classes, settings, [tmp_path / "a", tmp_path / "b"])
    mean, std = x_train.mean(0), x_train.std(0)
    for probe, l2 in zip(probes, (0.01, 1.0), strict=True):
        reference = LogisticRegression(C=1 / (2 * l2 * len(x_train)), max_iter=5000, tol=1e-8)
        reference.fit((x_train - mean) / std, y_train)
        expected = reference.predict_proba((x_val - mean) / std)
        saved = load_head(probe.checkpoint)  # safe mode: a plain Standardize -> Dropout -> Dense head
        np.testing.assert_allclose(np.asarray(saved.predict(x_val, verbose=0)), expected, atol=2e-4)
        assert probe.settings.kind == "logreg" and probe.settings.l2 == l2
        assert probe.history["val_loss"][0] == pytest.approx(
            -np.mean(np.log(expected[np.arange(len(y_val)), y_val])), abs=1e-3
        )
    # A stronger penalty gives a smaller kernel.
    norms = [np.linalg.norm(p.model.get_layer("softmax").get_weights()[0]) for p in probes]
    assert norms[1] < norms[0] / 5


def _objective(model, x: np.ndarray, y: np.ndarray, l2: float) -> float:
    """Mean cross-entropy plus ``l2 * sum(kernel ** 2)``: what both kinds of head minimise."""
    probabilities = np.asarray(model.predict(x, verbose=0))
    kernel = model.get_layer("softmax").get_weights()[0]
    return float(-np.mean(np.log(probabilities[np.arange(len(y)), y])) + l2 * np.sum(kernel**2))


@pytest.mark.slow
def test_adam_head_with_l2_converges_to_the_probe_with_the_same_penalty(tmp_path: Path):
    """The per-head L2 of the joint training is the probe's objective: the same penalty, the same optimum.

    Two heads in one model, l2 0 and l2 0.3: only the penalised one lands on the probe's solution.
    """
    x, y = _blobs(0, 150)
    settings = [HeadSettings(lr=1e-2, dropout=0.0, l2=l2, epochs=600, patience=600, batch_size=150)
                for l2 in (0.0, 0.3)]  # fmt: skip
    # Validation is the training set, so the kept epoch is where the training loss is lowest.
    free, penalised = train_heads(x, y, x, y, 3, settings, [tmp_path / "free", tmp_path / "l2"], progress=False)
    (probe,) = fit_probes(x, y, x, y, 3, probe_settings((0.3,), HeadSettings()), [tmp_path / "probe"])
    expected = np.asarray(probe.model.predict(x, verbose=0))
    assert _objective(penalised.model, x, y, 0.3) == pytest.approx(_objective(probe.model, x, y, 0.3), abs=1e-4)
    np.testing.assert_allclose(np.asarray(penalised.model.predict(x, verbose=0)), expected, atol=2e-3)
    assert np.abs(np.asarray(free.model.predict(x, verbose=0)) - expected).max() > 0.05
