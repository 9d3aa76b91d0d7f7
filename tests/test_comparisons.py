"""Paired comparisons of heads against hand computations, brute force, a bootstrap and published numbers."""

import math
import warnings

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from benchmark.evaluation.comparisons import (
    compare_task,
    delong_covariance,
    delong_test,
    holm,
    newcombe_paired_interval,
    paired_proportions,
)
from benchmark.evaluation.metrics import _rank_auc, _resample_indices, roc_auc


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def _sample_cov(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.sum((u - u.mean()) * (v - v.mean())) / (len(u) - 1))


def _brute_delong(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong (1988) by its definition: O(m n) kernel loops, sample covariances with divisor m - 1 and n - 1."""
    pos, neg = scores[:, y_true], scores[:, ~y_true]
    m, n = pos.shape[1], neg.shape[1]
    v10 = np.array(
        [[sum(_psi(x, y) for y in row_neg) / n for x in row_pos] for row_pos, row_neg in zip(pos, neg, strict=True)]
    )
    v01 = np.array(
        [[sum(_psi(x, y) for x in row_pos) / m for y in row_neg] for row_pos, row_neg in zip(pos, neg, strict=True)]
    )
    k = range(len(scores))
    cov = [[_sample_cov(v10[r], v10[s]) / m + _sample_cov(v01[r], v01[s]) / n for s in k] for r in k]
    return v10.mean(axis=1), np.array(cov)


def test_delong_by_hand_three_and_three():
    y = np.array([1, 1, 1, 0, 0, 0], bool)
    a = np.array([0.9, 0.4, 0.2, 0.5, 0.3, 0.1])
    b = np.array([0.8, 0.3, 0.7, 0.3, 0.6, 0.2])  # a positive ties a negative at 0.3
    # V10: negatives each positive outscores, over 3; V01: positives outscoring each negative, over 3; ties 1/2.
    v10_a, v01_a = np.array([3, 2, 1]) / 3, np.array([1, 2, 3]) / 3
    v10_b, v01_b = np.array([3, 1.5, 3]) / 3, np.array([2.5, 2, 3]) / 3
    assert roc_auc(y, a) == pytest.approx(v10_a.mean(), abs=1e-12)
    assert roc_auc(y, b) == pytest.approx(v01_b.mean(), abs=1e-12)
    s10 = np.array([[_sample_cov(u, v) for v in (v10_a, v10_b)] for u in (v10_a, v10_b)])
    s01 = np.array([[_sample_cov(u, v) for v in (v01_a, v01_b)] for u in (v01_a, v01_b)])
    expected = s10 / 3 + s01 / 3  # S10 / m + S01 / n
    aucs, cov = delong_covariance(y, np.stack([a, b]))
    np.testing.assert_allclose(aucs, [2 / 3, 5 / 6], atol=1e-12)
    np.testing.assert_allclose(cov, expected, atol=1e-12)
    variance = expected[0, 0] + expected[1, 1] - 2 * expected[0, 1]
    z = (2 / 3 - 5 / 6) / math.sqrt(variance)
    result = delong_test(y, a, b)
    assert result.difference == pytest.approx(-1 / 6, abs=1e-12)
    assert result.z == pytest.approx(z, abs=1e-12)
    assert result.p == pytest.approx(2 * norm.sf(abs(z)), abs=1e-12)
    half = 1.959963984540054 * math.sqrt(variance)
    assert (result.low, result.high) == pytest.approx((-1 / 6 - half, -1 / 6 + half), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(60) < 0.4
    scores = np.round(rng.random((3, 60)) + 0.5 * y, 1)  # rounding makes many ties, within and across classes
    aucs, cov = delong_covariance(y, scores)
    expected_aucs, expected_cov = _brute_delong(y, scores)
    np.testing.assert_allclose(aucs, expected_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, expected_cov, atol=1e-12)
    variance = expected_cov[0, 0] + expected_cov[1, 1] - 2 * expected_cov[0, 1]
    assert delong_test(y, scores[0], scores[1]).z == pytest.approx(
        (expected_aucs[0] - expected_aucs[1]) / math.sqrt(variance), abs=1e-12
    )


def test_delong_variance_agrees_with_a_paired_bootstrap():
    rng = np.random.default_rng(7)
    n = 300
    y = rng.random(n) < 0.5
    shared = rng.normal(size=n)  # what both heads see, so their errors are correlated
    a = 1.2 * y + shared + 0.6 * rng.normal(size=n)
    b = 0.9 * y + shared + 0.6 * rng.normal(size=n)
    index = _resample_indices(n, 4000, seed=3)
    samples = _rank_auc(y[index], a[index]) - _rank_auc(y[index], b[index])
    _, cov = delong_covariance(y, np.stack([a, b]))
    delong_variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    # Both estimate the same sampling variance; a variance from 4000 resamples has a relative standard
    # error of sqrt(2 / 3999) = 2.2 %, and the bootstrap's plug-in variance is about 1 % smaller than
    # DeLong's (n - 1 divisors): 8 % is over three standard errors, tight enough to catch a factor of 2 or m/n.
    assert np.var(samples, ddof=1) == pytest.approx(delong_variance, rel=0.08)


def test_delong_edge_cases_warn_nothing():
    y = np.array([1, 0, 1, 0, 1, 0, 0, 1], bool)
    score = np.array([0.9, 0.1, 0.8, 0.8, 0.3, 0.2, 0.4, 0.7])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = delong_test(y, score, score.copy())
        one_class = delong_test(np.ones(8, bool), score, score[::-1])
        aucs, cov = delong_covariance(np.zeros(8, bool), np.stack([score, score]))
    assert (same.difference, same.z, same.p, same.low, same.high) == (0.0, 0.0, 1.0, 0.0, 0.0)
    assert math.isnan(one_class.auc_a) and math.isnan(one_class.p) and math.isnan(one_class.z)
    assert np.isnan(aucs).all() and np.isnan(cov).all()


# Newcombe (1998, Stat Med 17:2635-2650), method 10 limits of the paper's worked examples: cells e (both
# right), f (first only), g (second only), h (neither); difference (f - g) / n. Published to 4 dp, and
# (1, 97, 1, 1)'s lower limit 0.8736 is 0.87367 here, so one unit of the last place is allowed.
# fmt: off
NEWCOMBE_METHOD_10 = [
    (36, 12, 2, 0, 0.0569, 0.3404), (20, 12, 2, 16, 0.0562, 0.3292), (18, 12, 2, 18, 0.0562, 0.3290),
    (36, 14, 0, 0, 0.1528, 0.4167), (35, 14, 0, 1, 0.1461, 0.4175), (18, 14, 0, 18, 0.1441, 0.3963),
    (2, 97, 1, 0, 0.8721, 0.9854), (1, 97, 1, 1, 0.8736, 0.9850), (0, 29, 1, 0, 0.6666, 0.9882),
    (2, 98, 0, 0, 0.9178, 0.9945), (1, 98, 0, 1, 0.9171, 0.9916), (0, 30, 0, 0, 0.8395, 1.0),
    (54, 0, 0, 0, -0.0664, 0.0664), (53, 0, 0, 1, -0.0729, 0.0729), (30, 0, 0, 24, -0.0358, 0.0358),
    (29, 0, 0, 25, -0.0354, 0.0354), (28, 0, 0, 26, -0.0352, 0.0352), (27, 0, 0, 27, -0.0351, 0.0351),
]
# fmt: on


def _cases(e: int, f: int, g: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-case correctness of two heads with these paired counts."""
    return np.repeat([1, 1, 0, 0], [e, f, g, h]).astype(bool), np.repeat([1, 0, 1, 0], [e, f, g, h]).astype(bool)


@pytest.mark.parametrize("e, f, g, h, low, high", NEWCOMBE_METHOD_10)
def test_paired_interval_reproduces_newcombe(e, f, g, h, low, high):
    correct_a, correct_b = _cases(e, f, g, h)
    result = paired_proportions(np.ones(len(correct_a), bool), correct_a, correct_b)
    assert (result.b, result.c) == (f, g)
    assert result.difference == pytest.approx((f - g) / (e + f + g + h), abs=1e-12)
    assert result.low == pytest.approx(low, abs=1e-4)
    assert result.high == pytest.approx(high, abs=1e-4)


def test_mcnemar_is_exact_binomial_on_discordant_cases():
    truth = np.array([True] * 40 + [False] * 10)
    for e, f, g, h in [(20, 12, 2, 6), (10, 5, 5, 20), (30, 9, 0, 1), (3, 1, 16, 20)]:
        correct_a, correct_b = _cases(e, f, g, h)
        # Only the 40 positives count, so shuffle in 10 negatives whose correctness must be ignored.
        correct_a, correct_b = np.concatenate([correct_a, np.ones(10, bool)]), np.concatenate([correct_b, [0] * 10])
        positives = paired_proportions(truth, correct_a, correct_b)
        assert positives.p == pytest.approx(binomtest(f, f + g, 0.5).pvalue, abs=1e-12)
        assert (positives.value_a, positives.value_b) == pytest.approx(((e + f) / 40, (e + g) / 40))
    agree = paired_proportions(truth, np.ones(50, bool), np.ones(50, bool))
    assert (agree.b, agree.c, agree.p, agree.difference) == (0, 0, 1.0, 0.0)
    empty = paired_proportions(np.zeros(5, bool), np.ones(5, bool), np.zeros(5, bool))
    assert math.isnan(empty.low) and math.isnan(empty.high) and math.isnan(empty.value_a)
    assert newcombe_paired_interval(36, 12, 2, 0, level=0.99)[0] < 0.0569 - 0.02  # the level is used


def test_holm_by_hand():
    # Finite p 0.005, 0.01, 0.03, 0.04 (m = 4): 0.02, 0.03, 0.06, then max(0.04, 0.06) = 0.06.
    adjusted = holm([0.01, 0.04, 0.03, math.nan, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, math.nan, 0.02], atol=1e-15)
    assert holm([]).shape == (0,)
    assert holm([0.6, 0.3]).tolist() == [0.6, 0.6]


def test_holm_equals_statsmodels_with_ties_and_nan():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(9)
    for n in (1, 2, 7, 36):
        p = np.round(rng.random(n) ** 3, 2)  # rounded: ties among the p-values
        np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=0, atol=1e-15)
        with_nan = np.append(p, math.nan)
        np.testing.assert_allclose(holm(with_nan)[:-1], multipletests(p, method="holm")[1], atol=1e-15)


def _heads(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % 2 == 0
    good = truth + 0.3 * rng.random(n)  # separates perfectly
    random = rng.random(n)
    scores = {"good": good, "copy": good.copy(), "random": random}
    decisions = {name: score >= np.median(score) for name, score in scores.items()}
    return truth, scores, decisions


def test_compare_task_tells_a_random_head_from_a_good_one():
    truth, scores, decisions = _heads()
    verdict = compare_task("normal_vs_pneumonia", truth, scores, decisions)
    rows = {(row.a, row.b): row for row in verdict.pairs}
    assert list(rows) == [("good", "copy"), ("good", "random"), ("copy", "random")]
    same = rows[("good", "copy")]
    assert (same.auc.p, same.p_holm, same.sensitivity.p, same.specificity.p) == (1.0, 1.0, 1.0, 1.0)
    assert rows[("good", "random")].p_holm < 1e-6 and rows[("good", "random")].sensitivity_p_holm < 1e-6
    assert verdict.best == "good" and verdict.tied == ("good", "copy")
    assert (verdict.n_pairs, verdict.n_different) == (3, 2)
    assert verdict.sentence() == (
        "The test set tells apart 2 of 3 pairs of heads (DeLong, Holm-corrected, α 0.05); "
        "2 of 3 heads are indistinguishable from the best (good)."
    )
    row = rows[("good", "random")].to_row()
    assert row["delta_auc"] == pytest.approx(1 - roc_auc(truth, scores["random"]))
    assert row["p_holm"] == rows[("good", "random")].p_holm and math.isnan(row["op_delta_specificity_high"])
    assert {"delta_sensitivity_low", "specificity_mcnemar_p", "op_sensitivity_p_holm", "z"} <= set(row)


def test_compare_task_at_an_operating_point_one_pair_and_one_head():
    truth, scores, decisions = _heads()
    op = {name: score >= 0.1 for name, score in scores.items()}
    two = compare_task("t", truth, {k: scores[k] for k in ("random", "good")}, decisions, op, best="random")
    pair, row = two.pairs[0], two.pairs[0].to_row()
    assert two.best == "random" and two.tied == ("random",)
    # At 0.1 the good head finds every positive and clears only the negatives it scores under 0.1.
    assert (pair.op_sensitivity.value_b, pair.op_sensitivity.value_a) == (1.0, np.mean(scores["random"][truth] >= 0.1))
    assert pair.op_specificity.value_b == np.mean(scores["good"][~truth] < 0.1)
    assert (row["op_delta_specificity"], row["op_delta_specificity_low"], row["op_delta_specificity_high"]) == (
        pair.op_specificity.difference,
        pair.op_specificity.low,
        pair.op_specificity.high,
    )
    assert (row["op_sensitivity_mcnemar_p"], row["op_sensitivity_p_holm"]) == (pair.op_sensitivity.p,) * 2
    assert two.sentence().startswith("The test set tells apart 1 of 1 pair of heads")
    assert "; 1 of 2 heads is indistinguishable from the best (random)." in two.sentence()
    one = compare_task("t", truth, {"good": scores["good"]}, decisions)
    assert (one.tied, one.pairs, one.n_pairs, one.n_different) == (("good",), (), 0, 0)
    flat = compare_task("t", np.ones(200, bool), scores, decisions)
    assert flat.n_different == 0 and flat.tied == ("good", "copy", "random")  # NaN p tells nothing apart


def test_holm_keeps_a_nominally_worse_head_tied():
    rng = np.random.default_rng(6)
    truth = np.arange(200) % 2 == 0
    a = truth + rng.normal(size=200)
    scores = {"a": a, "b": a + rng.normal(size=200), "copy": a.copy()}
    verdict = compare_task("t", truth, scores, {name: score > 0.5 for name, score in scores.items()})
    raw = [row.auc.p for row in verdict.pairs]
    assert raw[0] < 0.05 and raw[0] == pytest.approx(raw[2])  # b is worse than a (and its copy) before Holm...
    assert [row.p_holm for row in verdict.pairs] == pytest.approx([3 * raw[0], 1.0, 3 * raw[0]])
    assert verdict.tied == ("a", "b", "copy") and verdict.n_different == 0  # ...and not after it
    assert "tells apart 0 of 3 pairs" in verdict.sentence() and "3 of 3 heads are" in verdict.sentence()
