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

Multi-label: one binary logistic regression per finding, on the images whose
value of that finding is known; together they are a Dense sigmoid layer.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from benchmark.evaluation.metrics import multiclass_accuracy
from benchmark.run_folder import HISTORY
from benchmark.training.heads import (
    HeadSettings,
    TrainedHead,
    build_head,
    cross_entropy,
    feature_statistics,
    output_layer,
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
    multi_label = np.ndim(y_train) == 2
    if multi_label:
        return _fit_finding_probes(train, y_train, val, y_val, statistics, settings, out_dirs)
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
        output_layer(head).set_weights([kernel, bias])
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


def _fit_finding_probes(
    train: np.ndarray,
    y_train: np.ndarray,
    val: np.ndarray,
    y_val: np.ndarray,
    statistics: tuple[np.ndarray, np.ndarray],
    settings: list[HeadSettings],
    out_dirs: list[Path],
) -> list[TrainedHead]:
    """Multi-label probes: per finding a binary logistic regression on its known images, one sigmoid head each."""
    balanced = settings[0].class_weight == "balanced"
    models = [
        LogisticRegression(max_iter=MAX_ITERATIONS, tol=1e-6, warm_start=True,
                           class_weight="balanced" if balanced else None)
        for _ in range(y_train.shape[1])
    ]  # fmt: skip
    trained: dict[int, TrainedHead] = {}
    for index in sorted(range(len(settings)), key=lambda k: -settings[k].l2):
        started = time.perf_counter()
        for j, model in enumerate(models):
            known = ~np.isnan(y_train[:, j])
            # l2 * sum(W_j ** 2) on finding j's mean loss over its known images.
            model.set_params(C=1.0 / (2.0 * settings[index].l2 * known.sum()))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(train[known], y_train[known, j].astype(np.int64))
        seconds = time.perf_counter() - started
        kernel = np.concatenate([m.coef_.T for m in models], axis=1).astype(np.float32)
        bias = np.concatenate([m.intercept_ for m in models]).astype(np.float32)
        head = build_head(train.shape[1], y_train.shape[1], 0.0, statistics, multi_label=True)
        output_layer(head).set_weights([kernel, bias])
        history = {}
        for prefix, features, labels in (("", train, y_train), ("val_", val, y_val)):
            probabilities = expit(features @ kernel + bias)
            history[f"{prefix}loss"] = [cross_entropy(probabilities, labels)]
            history[f"{prefix}accuracy"] = [multiclass_accuracy(labels, probabilities)]
        checkpoint = save_head(head, out_dirs[index])
        write_history(out_dirs[index] / HISTORY, history)
        trained[index] = TrainedHead(settings[index], head, history, 1, 1, seconds, checkpoint)
    return [trained[k] for k in range(len(settings))]
