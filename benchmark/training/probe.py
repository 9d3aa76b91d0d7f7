"""Fits the linear-probe baseline, an L2-regularised logistic regression on the pooled features.

This is the textbook way to measure how good frozen features are (the
SimCLR, CLIP and MedMNIST+ linear probes): standardised features, a
multinomial logistic regression fitted to convergence with L-BFGS
(scikit-learn), and its regularisation strength chosen on the validation
split. A multinomial logistic regression is exactly a Dense softmax layer,
so each fitted probe is stored as the same Keras head as the Adam-trained
ones (Standardize -> Dropout(0) -> Dense softmax, ``best.keras``): every
report, ``predict`` and its Grad-CAM work on it unchanged.

The strength is given as the head's ``l2`` (the penalty ``l2 * sum(W ** 2)``
on the mean cross-entropy), so probe and Adam heads with the same ``l2``
minimise the same objective; scikit-learn's ``C`` is ``1 / (2 * l2 * n)``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from benchmark.training.heads import (
    HISTORY,
    HeadSettings,
    TrainedHead,
    build_head,
    cross_entropy,
    feature_statistics,
    save_head,
    write_history,
)
from features.data.dataset import class_balance

MAX_ITERATIONS = 2000


def fit_probes(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    settings: list[HeadSettings],
    out_dirs: list[Path],
) -> list[TrainedHead]:
    """Fit one logistic-regression probe per ``settings`` entry (its ``l2``); save each as a Keras head.

    The fits run from the strongest penalty to the weakest, each starting
    from the previous solution (a regularisation path), which converges in a
    fraction of the iterations of cold starts and to the same optimum.
    """
    statistics = feature_statistics(x_train)
    mean, std = (s.astype(np.float32) for s in statistics)
    train = (np.asarray(x_train, np.float32) - mean) / std
    val = (np.asarray(x_val, np.float32) - mean) / std
    balanced = settings[0].class_weight == "balanced"
    model = LogisticRegression(
        max_iter=MAX_ITERATIONS, tol=1e-6, warm_start=True,
        class_weight=class_balance(y_train, n_classes) if balanced else None,
    )  # fmt: skip
    trained: dict[int, TrainedHead] = {}
    for index in sorted(range(len(settings)), key=lambda k: -settings[k].l2):
        one = settings[index]
        model.set_params(C=1.0 / (2.0 * one.l2 * len(train)))
        started = time.perf_counter()
        with warnings.catch_warnings():
            # A probe that hits the iteration cap is still a valid (slightly under-fitted) head.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(train, y_train)
        seconds = time.perf_counter() - started
        head = build_head(train.shape[1], n_classes, 0.0, statistics)
        kernel, bias = _dense_weights(model, n_classes)
        head.get_layer("softmax").set_weights([kernel, bias])
        history = {
            "loss": [cross_entropy(model.predict_proba(train), y_train)],
            "accuracy": [float(model.score(train, y_train))],
            "val_loss": [cross_entropy(model.predict_proba(val), y_val)],
            "val_accuracy": [float(model.score(val, y_val))],
        }
        checkpoint = save_head(head, out_dirs[index])
        write_history(out_dirs[index] / HISTORY, history)
        trained[index] = TrainedHead(one, head, history, 1, 1, seconds, checkpoint)
    return [trained[k] for k in range(len(settings))]


def _dense_weights(model: LogisticRegression, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The fitted probe as a softmax Dense layer's kernel ``(features, classes)`` and bias."""
    coef, intercept = model.coef_, model.intercept_
    if n_classes == 2 and coef.shape[0] == 1:
        # Binary scikit-learn keeps one logit; softmax over (0, z) gives the same probabilities.
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.array([0.0, intercept[0]])
    return coef.T.astype(np.float32), intercept.astype(np.float32)
