"""Metrics against hand-computed confusion matrices and scikit-learn."""

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from benchmark.evaluation.metrics import (
    METRICS,
    binary_metrics,
    binary_tasks,
    bootstrap_intervals,
    confusion_counts,
    evaluate,
    expected_calibration_error,
    multiclass_accuracy,
    multiclass_confusion,
    operating_point,
    reliability_bins,
    roc_auc,
    task_metrics,
    threshold_for_sensitivity,
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
        "normal_vs_disease": ("covid", "pneumonia"),
        "covid_vs_rest": ("covid",),
        "pneumonia_vs_rest": ("pneumonia",),
    }
    six = ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule")
    assert binary_tasks(six) == {f"{name}_vs_rest": (name,) for name in six}
    assert binary_tasks(("NORMAL", "PNEUMONIA")) == {"normal_vs_pneumonia": ("PNEUMONIA",)}
    assert set(evaluate(np.array([0, 1, 2]), np.eye(3), CLASSES)) == set(binary_tasks(CLASSES))


def test_threshold_for_sensitivity_by_hand():
    truth = np.array([1, 1, 1, 1, 0, 0], bool)
    score = np.array([0.9, 0.8, 0.7, 0.2, 0.5, 0.1])
    assert threshold_for_sensitivity(truth, score, 0.75) == 0.7  # 3 of 4 positives at or above 0.7
    assert threshold_for_sensitivity(truth, score, 0.95) == 0.2  # all 4 needed
    assert threshold_for_sensitivity(truth, score, 0.25) == 0.9
    tied = np.array([0.9, 0.7, 0.7, 0.2, 0.5, 0.1])
    assert threshold_for_sensitivity(truth, tied, 0.5) == 0.7  # ties let 3 through: more than asked, never fewer
    assert math.isnan(threshold_for_sensitivity(np.zeros(3, bool), score[:3], 0.9))
    with pytest.raises(ValueError):
        threshold_for_sensitivity(truth, score, 1.5)


@pytest.mark.parametrize("seed", range(5))
def test_threshold_is_the_highest_that_reaches_the_target(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random(200) < 0.4
    score = np.round(rng.random(200) * 0.5 + truth * 0.3, 2)  # rounded: many ties
    for target in (0.8, 0.9, 0.95, 1.0):
        threshold = threshold_for_sensitivity(truth, score, target)
        assert np.mean(score[truth] >= threshold) >= target
        higher = score[truth][score[truth] > threshold]
        if len(higher):
            assert np.mean(score[truth] >= higher.min()) < target


def test_operating_point_uses_the_validation_threshold_on_test():
    val_truth, val_score = np.array([1, 1, 0, 0], bool), np.array([0.9, 0.6, 0.7, 0.1])
    test_truth, test_score = np.array([1, 1, 1, 0, 0], bool), np.array([0.8, 0.65, 0.5, 0.62, 0.3])
    point = operating_point(val_truth, val_score, test_truth, test_score, 0.95)
    assert point["threshold"] == 0.6
    assert point["val_sensitivity"] == 1.0 and point["val_specificity"] == 0.5
    assert point["test_sensitivity"] == 2 / 3 and point["test_specificity"] == 0.5
    assert (point["test_tp"], point["test_fn"], point["test_fp"], point["test_tn"]) == (2, 1, 1, 1)


def test_bootstrap_intervals_match_a_loop_over_scikit_learn():
    rng = np.random.default_rng(3)
    truth = rng.random(120) < 0.5
    score = np.clip(truth * 0.3 + rng.random(120) * 0.7, 0, 1)
    decision = score > 0.5
    intervals = bootstrap_intervals(truth, decision, score, resamples=200, seed=11)
    index = np.random.default_rng(11).integers(0, 120, size=(200, 120))
    by_hand = {name: [] for name in METRICS}
    for rows in index:
        t, d, s = truth[rows], decision[rows], score[rows]
        by_hand["accuracy"].append(accuracy_score(t, d))
        by_hand["sensitivity"].append(recall_score(t, d))
        by_hand["specificity"].append(recall_score(~t, ~d))
        by_hand["precision"].append(precision_score(t, d))
        by_hand["f1"].append(f1_score(t, d))
        by_hand["auc"].append(roc_auc_score(t, s))
    for name in METRICS:
        expected = np.percentile(by_hand[name], [2.5, 97.5])
        np.testing.assert_allclose(intervals[name], expected, rtol=1e-12, err_msg=name)
        point = binary_metrics(truth, decision, score)[name]
        assert intervals[name][0] <= point <= intervals[name][1]


def test_bootstrap_without_positive_cases_gives_nan_sensitivity():
    intervals = bootstrap_intervals(np.zeros(10, bool), np.zeros(10, bool), np.linspace(0, 1, 10), resamples=50)
    assert all(math.isnan(v) for v in intervals["sensitivity"]) and intervals["specificity"] == (1.0, 1.0)


def test_expected_calibration_error_by_hand():
    truth = np.array([0, 0, 1, 0])
    score = np.array([0.05, 0.15, 0.95, 0.95])
    # Bins: 0.05 (gap 0.05), 0.15 (gap 0.15), two at 0.95 with half positive (gap 0.45 each).
    assert expected_calibration_error(truth, score) == pytest.approx((0.05 + 0.15 + 0.9) / 4)
    bins = reliability_bins(truth, score)
    assert bins["count"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2] and math.isnan(bins["frequency"][4])
    assert reliability_bins(np.array([1]), np.array([1.0]))["count"][-1] == 1  # a probability of 1 is in the last bin


def test_reliability_bins_match_scikit_learn():
    rng = np.random.default_rng(5)
    score = rng.random(500)
    truth = rng.random(500) < score  # calibrated by construction
    bins = reliability_bins(truth, score)
    frequency, confidence = calibration_curve(truth, score, n_bins=10, strategy="uniform")
    filled = bins["count"] > 0
    np.testing.assert_allclose(bins["frequency"][filled], frequency)
    np.testing.assert_allclose(bins["confidence"][filled], confidence)
    assert expected_calibration_error(truth, score) < 0.08
    assert expected_calibration_error(truth, np.clip(score * 0.3, 0, 1)) > 0.25  # overconfident in "no disease"


def test_paired_auc_difference_against_scikit_learn():
    from benchmark.evaluation.metrics import paired_auc_difference

    rng = np.random.default_rng(3)
    truth = rng.random(300) < 0.4
    good = truth + rng.normal(0, 0.6, 300)
    weak = truth + rng.normal(0, 1.5, 300)
    diff, low, high = paired_auc_difference(truth, good, weak, resamples=500, seed=1)
    assert diff == pytest.approx(roc_auc_score(truth, good) - roc_auc_score(truth, weak), abs=1e-12)
    assert 0 < low < diff < high  # clearly better on the same cases
    assert paired_auc_difference(truth, good, good, resamples=200) == (0.0, 0.0, 0.0)
    # The paired interval is narrower than the gap between two unpaired intervals would suggest.
    close = good + rng.normal(0, 0.05, 300)
    _, low, high = paired_auc_difference(truth, good, close, resamples=500, seed=1)
    assert high - low < 0.02


def test_verify_ece_accepts_a_score_a_rounding_step_above_one():
    """Summed float32 probabilities can reach 1.0000001; verify once failed on it with scikit-learn's ValueError."""
    from benchmark.evaluation.metrics import expected_calibration_error
    from benchmark.evaluation.verify import sklearn_ece

    truth = np.array([0, 1, 1, 0, 1])
    score = np.array([0.1, 0.9, np.float32(0.6) + np.float32(0.4000001), 0.3, 0.7])
    assert score.max() > 1
    assert sklearn_ece(truth, score) == pytest.approx(expected_calibration_error(truth, score), abs=1e-12)
