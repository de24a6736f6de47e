import itertools
import math

import numpy as np
import pytest
import scipy.stats
from rliable import metrics as rly_metrics

from harness import stats

NAN = float("nan")


def rng(seed=0):
    return np.random.default_rng(seed)


# --- pairing and NaN handling -------------------------------------------------------------------------------


def test_paired_values_drops_items_unscored_by_either_and_counts_them():
    a, b, dropped = stats.paired_values([1.0, NAN, 0.0, 0.5], [0.0, 1.0, NAN, 0.5])
    assert a.tolist() == [1.0, 0.5] and b.tolist() == [0.0, 0.5] and dropped == 2


def test_paired_values_names_the_mismatch():
    with pytest.raises(ValueError, match="a has 3 items, b has 2"):
        stats.paired_values([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="a: need a 1-D array"):
        stats.paired_values([[1, 2]], [1, 2])


# --- bootstrap CIs ------------------------------------------------------------------------------------------


def test_mean_ci_matches_scipy_bootstrap_on_a_fixed_seed():
    values = rng(1).normal(size=40)
    ours = stats.mean_ci(np.append(values, NAN), rng=rng(7), n_resamples=2000)
    ref = scipy.stats.bootstrap((values,), np.mean, rng=rng(7), n_resamples=2000, method="percentile")
    assert (ours.low, ours.high) == (ref.confidence_interval.low, ref.confidence_interval.high)
    assert ours.estimate == pytest.approx(values.mean()) and (ours.n, ours.n_dropped) == (40, 1)


def test_paired_bootstrap_matches_scipy_paired_resampling():
    a, b = rng(2).random(30), rng(3).random(30)
    ours = stats.paired_bootstrap(a, b, rng=rng(5), n_resamples=2000)

    def mean_diff(x, y, axis=-1):
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    ref = scipy.stats.bootstrap((a, b), mean_diff, paired=True, rng=rng(5), n_resamples=2000, method="percentile")
    assert ours.low == pytest.approx(ref.confidence_interval.low)
    assert ours.high == pytest.approx(ref.confidence_interval.high)
    assert ours.estimate == pytest.approx(np.mean(a - b)) and ours.low < ours.estimate < ours.high


def test_paired_bootstrap_edge_cases():
    ties = stats.paired_bootstrap([1, 0, 1], [1, 0, 1], rng=rng(), n_resamples=200)
    assert (ties.estimate, ties.low, ties.high) == (0.0, 0.0, 0.0)
    one = stats.paired_bootstrap([1.0, NAN], [0.0, 0.0], rng=rng())
    assert one.estimate == 1.0 and math.isnan(one.low) and (one.n, one.n_dropped) == (1, 1)
    none = stats.paired_bootstrap([NAN], [0.0], rng=rng())
    assert math.isnan(none.estimate) and (none.n, none.n_dropped) == (0, 1)


# --- McNemar ------------------------------------------------------------------------------------------------


def test_mcnemar_exact_textbook_values():
    # 5 discordant pairs all favouring a: two-sided exact p = 2 * 0.5**5.
    res = stats.mcnemar_exact([1, 1, 1, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0, 1])
    assert res.pvalue == pytest.approx(0.0625) and res.statistic == 0 and res.n == 7


def test_mcnemar_exact_is_the_binomial_test_on_discordant_pairs():
    a = rng(4).random(300) < 0.6
    b = rng(5).random(300) < 0.5
    n10, n01 = int((a & ~b).sum()), int((~a & b).sum())
    ref = scipy.stats.binomtest(min(n10, n01), n10 + n01, 0.5).pvalue
    assert stats.mcnemar_exact(a, b).pvalue == pytest.approx(ref)


def test_mcnemar_rejects_non_binary_and_drops_nan():
    with pytest.raises(ValueError, match="b_correct: McNemar needs binary"):
        stats.mcnemar_exact([1, 0], [0.5, 1])
    res = stats.mcnemar_exact([1, NAN, 0], [0, 1, 0])
    assert (res.n, res.n_dropped) == (2, 1)


# --- permutation test ---------------------------------------------------------------------------------------


def test_permutation_test_equals_exact_sign_flip_enumeration():
    a = np.array([0.9, 0.7, 0.8, 0.4, 0.6, 0.95, 0.5, 0.3])
    b = np.array([0.6, 0.65, 0.5, 0.45, 0.3, 0.7, 0.55, 0.1])
    d = a - b
    observed = d.mean()
    flips = [np.mean(d * np.array(signs)) for signs in itertools.product((1, -1), repeat=d.size)]
    exact = np.mean(np.abs(flips) >= abs(observed) - 1e-12)
    res = stats.paired_permutation_test(a, b, rng=rng(), n_resamples=10_000)  # 2**8 <= n_resamples: exact
    assert res.pvalue == pytest.approx(exact) and res.statistic == pytest.approx(observed)


def test_permutation_test_small_samples():
    res = stats.paired_permutation_test([1.0, NAN], [0.0, 1.0], rng=rng())
    assert res.statistic == 1.0 and math.isnan(res.pvalue) and (res.n, res.n_dropped) == (1, 1)
    ties = stats.paired_permutation_test([1.0, 0.0, 1.0], [1.0, 0.0, 1.0], rng=rng())
    assert ties.pvalue == 1.0


# --- multiple comparisons -----------------------------------------------------------------------------------


def test_holm_textbook_example():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04) = 0.06.
    out = stats.adjust_pvalues([0.01, 0.04, 0.03, 0.005])
    assert out["p_adjusted"] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert out["reject"].tolist() == [True, False, False, True]


def test_sidak_formula_and_nan_left_out_of_the_family():
    out = stats.adjust_pvalues([0.01, NAN, 0.2], method="sidak")
    assert out["p_adjusted"][[0, 2]] == pytest.approx([1 - 0.99**2, 1 - 0.8**2])  # m = 2, not 3
    assert math.isnan(out["p_adjusted"][1]) and not out["reject"][1]


def test_adjust_pvalues_rejects_bad_input():
    with pytest.raises(ValueError, match="correction: unknown method 'bh'"):
        stats.adjust_pvalues([0.1], method="bh")
    with pytest.raises(ValueError, match=r"pvalues: must lie in \[0, 1\]"):
        stats.adjust_pvalues([1.5])


# --- effect sizes -------------------------------------------------------------------------------------------


def test_effect_sizes_hand_computed():
    # d = [1, 2, 3]: mean 2, sd 1 -> d_z = 2; all positive -> r = 1.
    out = stats.paired_effect_sizes([2, 3, 4], [1, 1, 1])
    assert out["cohens_dz"] == pytest.approx(2.0) and out["rank_biserial"] == pytest.approx(1.0)
    # d = [1, 2, -3, 4, 0]: zero dropped; T+ = 1+2+4 = 7, T- = 3 -> r = 4/10 (Kerby 2014).
    out = stats.paired_effect_sizes([2, 3, 0, 5, 1], [1, 1, 3, 1, 1])
    assert out["rank_biserial"] == pytest.approx(0.4) and out["mean_difference"] == pytest.approx(0.8)


def test_effect_sizes_all_ties_and_single_item():
    ties = stats.paired_effect_sizes([1, 1, 1], [1, 1, 1])
    assert math.isnan(ties["cohens_dz"]) and math.isnan(ties["rank_biserial"]) and ties["mean_difference"] == 0
    one = stats.paired_effect_sizes([1.0, NAN], [0.0, 0.0])
    assert one["n"] == 1 and one["n_dropped"] == 1 and math.isnan(one["cohens_dz"])


# --- across seeds (rliable) ---------------------------------------------------------------------------------


def rliable_stratified_ci(scores, func, reps, generator):
    """Percentile CI with rliable's StratifiedBootstrap indexing (task_bootstrap=False): runs resampled per task."""
    strata = np.ogrid[tuple(slice(x) for x in (0, *scores.shape[1:]))][1:]
    draws = [
        func(scores[(generator.choice(scores.shape[0], scores.shape, replace=True), *strata)]) for _ in range(reps)
    ]
    return np.percentile(draws, [2.5, 97.5])


def test_iqm_point_is_rliable_and_ci_agrees_with_rliable_resampling():
    scores = rng(8).random((6, 3))
    out = stats.interval_estimates({"m": scores}, rng=rng(9), n_resamples=3000)["m"]
    assert out.estimate == rly_metrics.aggregate_iqm(scores) and out.n == 6
    ref = rliable_stratified_ci(scores, rly_metrics.aggregate_iqm, 3000, rng(10))
    assert out.low == pytest.approx(ref[0], abs=0.03) and out.high == pytest.approx(ref[1], abs=0.03)


def test_iqm_against_rliable_library_when_it_imports():
    try:
        from rliable import library as rly
    except Exception as err:  # rliable 1.2 + arch cannot import under pandas 3 (see harness.stats docstring)
        pytest.skip(f"rliable.library does not import here: {err}")
    scores = rng(8).random((6, 3))
    np.random.seed(0)
    point, ci = rly.get_interval_estimates({"m": scores}, lambda s: np.array([rly_metrics.aggregate_iqm(s)]), reps=3000)
    ours = stats.interval_estimates({"m": scores}, rng=rng(9), n_resamples=3000)["m"]
    assert ours.estimate == pytest.approx(point["m"][0])
    assert (ours.low, ours.high) == pytest.approx((ci["m"][0, 0], ci["m"][1, 0]), abs=0.03)


def test_interval_estimates_edge_cases():
    one_seed = stats.interval_estimates({"m": [[0.5, 0.7]]}, rng=rng())["m"]
    assert one_seed.estimate == pytest.approx(0.6) and math.isnan(one_seed.low) and one_seed.n == 1
    flat = stats.interval_estimates({"m": [0.2, 0.4, 0.6, 0.8]}, rng=rng(), n_resamples=200)["m"]
    assert flat.n == 4 and flat.low <= flat.estimate <= flat.high  # 1-D = seeds of one task
    with pytest.raises(ValueError, match="bad: scores contain NaN"):
        stats.interval_estimates({"bad": [[0.1], [NAN]]}, rng=rng())


def test_probability_of_improvement_matches_rliable():
    x, y = rng(11).random((5, 2)), rng(12).random((4, 2))
    out = stats.probability_of_improvement(x, y, rng=rng(), n_resamples=300)
    assert out.estimate == rly_metrics.probability_of_improvement(x, y)
    assert 0 <= out.low <= out.estimate <= out.high <= 1


def test_probability_of_improvement_extremes():
    better = stats.probability_of_improvement(
        [[1.0], [2.0], [3.0]], [[-1.0], [-2.0], [0.0]], rng=rng(), n_resamples=200
    )
    assert (better.estimate, better.low, better.high) == (1.0, 1.0, 1.0)
    same = stats.probability_of_improvement([[1.0], [1.0]], [[1.0], [1.0]], rng=rng(), n_resamples=200)
    assert same.estimate == 0.5
    with pytest.raises(ValueError, match="scores_x has 2 tasks but scores_y has 1"):
        stats.probability_of_improvement([[1, 2], [3, 4]], [[1], [2]], rng=rng())


# --- rank correlation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "func"), [("spearman", scipy.stats.spearmanr), ("kendall", scipy.stats.kendalltau)])
def test_rank_correlation_matches_scipy(method, func):
    static = [0.61, 0.72, 0.55, 0.80, 0.66, 0.70, NAN]
    downstream = [0.30, 0.22, 0.35, 0.18, 0.31, 0.25, 0.5]
    out = stats.rank_correlation(static, downstream, rng=rng(), method=method, n_resamples=500)
    ref = func(static[:6], downstream[:6])
    # Six pairs: the p-value is exact, from all 720 pairings (scipy's kendalltau is exact here too).
    x, y = static[:6], downstream[:6]
    exact = scipy.stats.permutation_test((x,), lambda s: func(s, y).statistic, permutation_type="pairings")
    assert out.estimate == pytest.approx(ref.statistic) and out.pvalue == pytest.approx(exact.pvalue)
    assert (out.n, out.n_dropped) == (6, 1) and -1 <= out.low <= out.estimate <= out.high <= 1


def test_rank_correlation_p_is_exact_for_few_methods():
    # Three methods in perfectly reversed order: 1 of the 3! orderings is as extreme on each side, p = 2/6.
    out = stats.rank_correlation([1, 2, 3], [3, 2, 1], rng=rng(), n_resamples=50)
    assert out.estimate == -1.0 and out.pvalue == pytest.approx(1 / 3)


def test_rank_correlation_monotone_and_degenerate():
    mono = stats.rank_correlation([1, 2, 3, 4], [10, 20, 30, 40], rng=rng(), n_resamples=500)
    assert (mono.estimate, mono.low, mono.high) == (1.0, 1.0, 1.0)
    assert mono.n_undefined > 0  # some resamples draw one point four times: no correlation there
    ties = stats.rank_correlation([1, 1, 1], [1, 2, 3], rng=rng())
    assert math.isnan(ties.estimate) and math.isnan(ties.low)
    assert math.isnan(stats.rank_correlation([1], [2], rng=rng()).estimate)
    with pytest.raises(ValueError, match="method: unknown rank correlation 'pearson'"):
        stats.rank_correlation([1, 2], [1, 2], rng=rng(), method="pearson")
