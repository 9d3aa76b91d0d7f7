"""Metrics against hand-computed confusion matrices and scikit-learn."""

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from benchmark.metrics import (
    binary_metrics,
    binary_tasks,
    confusion_counts,
    evaluate,
    multiclass_accuracy,
    multiclass_confusion,
    roc_auc,
    task_metrics,
)

CLASSES = ("normal", "bacterial", "viral")


def test_confusion_and_ratios_by_hand():
    # 10 patients: 4 diseased, 6 healthy. Found 3 of 4, one false alarm.
    y_true = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    y_pred = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], bool)
    score = np.linspace(0, 1, 10)
    metrics = binary_metrics(y_true, y_pred, score)
    assert (metrics["tp"], metrics["fn"], metrics["fp"], metrics["tn"]) == (3, 1, 1, 5)
    assert metrics["sensitivity"] == pytest.approx(3 / 4)
    assert metrics["specificity"] == pytest.approx(5 / 6)
    assert metrics["precision"] == pytest.approx(3 / 4)
    assert metrics["accuracy"] == pytest.approx(8 / 10)
    assert metrics["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))


def test_auc_by_hand_with_ties():
    # Pairs (pos, neg): (0.35, 0.1) win, (0.35, 0.4) loss, (0.8, *) two wins -> 3/4.
    assert roc_auc(np.array([0, 0, 1, 1], bool), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    # One tie counts one half.
    assert roc_auc(np.array([0, 1], bool), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(np.array([0, 0, 1], bool), np.array([0.2, 0.7, 0.7])) == pytest.approx(0.75)


def test_undefined_ratios_are_nan():
    metrics = binary_metrics(np.zeros(4, bool), np.zeros(4, bool), np.zeros(4))
    assert math.isnan(metrics["sensitivity"]) and math.isnan(metrics["auc"]) and math.isnan(metrics["f1"])
    assert metrics["specificity"] == 1.0 and metrics["accuracy"] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_binary_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.random(200) < 0.4
    score = np.round(rng.random(200) * 0.6 + 0.4 * y_true, 2)  # rounding makes ties
    y_pred = score > 0.5
    metrics = binary_metrics(y_true, y_pred, score)
    assert metrics["sensitivity"] == pytest.approx(recall_score(y_true, y_pred))
    assert metrics["specificity"] == pytest.approx(recall_score(~y_true, ~y_pred))
    assert metrics["precision"] == pytest.approx(precision_score(y_true, y_pred))
    assert metrics["f1"] == pytest.approx(f1_score(y_true, y_pred))
    assert metrics["auc"] == pytest.approx(roc_auc_score(y_true, score))
    assert confusion_counts(y_true, y_pred)["tp"] == int(np.sum(y_true & y_pred))


def test_task_decision_is_the_argmax_mapped_onto_the_task():
    labels = np.array([1, 0, 2, 0])
    probabilities = np.array(
        [
            [0.40, 0.35, 0.25],  # argmax normal although P(pneumonia) = 0.6: counts as a miss
            [0.70, 0.20, 0.10],
            [0.10, 0.30, 0.60],
            [0.20, 0.50, 0.30],
        ]
    )
    pneumonia = task_metrics(labels, probabilities, CLASSES, ("bacterial", "viral"))
    assert (pneumonia["tp"], pneumonia["fn"], pneumonia["fp"], pneumonia["tn"]) == (1, 1, 1, 1)
    # AUC ranks the summed pneumonia probability: positives 0.6, 0.9; negatives 0.3, 0.8 -> 3/4.
    assert pneumonia["auc"] == pytest.approx(0.75)
    viral = task_metrics(labels, probabilities, CLASSES, ("viral",))
    assert (viral["tp"], viral["fn"], viral["fp"], viral["tn"]) == (1, 0, 0, 3)


def test_multiclass_confusion_by_hand():
    labels = np.array([0, 0, 1, 2, 2])
    probabilities = np.eye(3)[[0, 1, 1, 2, 0]]
    assert multiclass_confusion(labels, probabilities, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert multiclass_accuracy(labels, probabilities) == pytest.approx(3 / 5)


def test_tasks_for_kermany_and_other_datasets():
    assert binary_tasks(CLASSES) == {
        "normal_vs_pneumonia": ("bacterial", "viral"),
        "bacterial_vs_rest": ("bacterial",),
        "viral_vs_rest": ("viral",),
    }
    assert binary_tasks(("covid", "normal", "pneumonia")) == {
        "covid_vs_rest": ("covid",),
        "normal_vs_rest": ("normal",),
        "pneumonia_vs_rest": ("pneumonia",),
    }
    assert binary_tasks(("NORMAL", "PNEUMONIA")) == {"normal_vs_pneumonia": ("PNEUMONIA",)}
    assert set(evaluate(np.array([0, 1, 2]), np.eye(3), CLASSES)) == set(binary_tasks(CLASSES))
