"""Statistics for comparing reward methods: thin wrappers over scipy, statsmodels and rliable.

Conventions (rliable style): arrays in, frozen dataclasses or dicts out, and an explicit `rng: np.random.Generator`
for everything that resamples. Paired functions take two per-item arrays over the *same* items; NaN means "unscored"
(see harness.bench.metrics), so an item unscored by either method is dropped and counted in `n_dropped`, never
treated as a loss. A confidence interval needs two or more observations; with fewer it is reported as NaN.

Why scipy.stats.bootstrap rather than rliable.library.get_interval_estimates for the seed CIs: rliable 1.2 draws its
resampling indices from NumPy's *global* RNG (StratifiedBootstrap.update_indices calls np.random.choice), so it cannot
honour an explicit generator, and it cannot be imported with pandas 3 (arch 7 fails on import, arch 8 rejects
rliable's `random_state` argument). rliable's stratified bootstrap resamples runs independently within each task;
scipy.stats.bootstrap with one sample per task and `paired=False` does exactly that. The aggregates themselves
(IQM, probability of improvement) are rliable's own functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike
from rliable import metrics as rly_metrics
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

NAN = float("nan")
# statsmodels names; "sidak" is single-step, "holm-sidak" its step-down version.
CORRECTIONS = ("holm", "sidak", "holm-sidak", "bonferroni", "fdr_bh")


class _Record:
    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON results."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Estimate(_Record):
    """A point estimate with its confidence interval and the number of observations behind it."""

    estimate: float
    low: float
    high: float
    n: int
    n_dropped: int = 0
    confidence: float = 0.95


@dataclass(frozen=True)
class HypothesisTest(_Record):
    """A paired significance test: statistic, p-value, and how many pairs it used."""

    test: str
    statistic: float
    pvalue: float
    n: int
    n_dropped: int = 0


@dataclass(frozen=True)
class RankCorrelation(_Record):
    """A rank correlation with a paired-bootstrap CI; `n_undefined` resamples had constant ranks and no value."""

    method: str
    estimate: float
    low: float
    high: float
    pvalue: float
    n: int
    n_dropped: int = 0
    n_undefined: int = 0
    confidence: float = 0.95


def as_1d(values: ArrayLike, name: str) -> np.ndarray:
    """`values` as a float array, or a ValueError naming `name` unless it is one-dimensional."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name}: need a 1-D array, got shape {arr.shape}")
    return arr


def paired_values(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray, int]:
    """Align two per-item arrays: drop items that either leaves unscored (NaN) and count them.

    >>> paired_values([1.0, float("nan"), 0.0], [0.0, 1.0, 1.0])
    (array([1., 0.]), array([0., 1.]), 1)
    """
    x, y = as_1d(a, "a"), as_1d(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired arrays differ in length: a has {x.size} items, b has {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep], y[keep], int(x.size - keep.sum())


def _bootstrap_interval(
    data: tuple[np.ndarray, ...],
    statistic: Callable[..., Any],
    rng: np.random.Generator,
    confidence: float,
    n_resamples: int,
    method: str,
) -> tuple[float, float]:
    res = scipy.stats.bootstrap(
        data, statistic, rng=rng, confidence_level=confidence, n_resamples=n_resamples, method=method
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_ci(
    values: ArrayLike,
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    method: str = "percentile",
) -> Estimate:
    """Bootstrap CI of the mean of per-item values, leaving out (and counting) NaN = unscored items."""
    arr = as_1d(values, "values")
    kept = arr[~np.isnan(arr)]
    n, dropped = int(kept.size), int(arr.size - kept.size)
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0, dropped, confidence)
    if n < 2:
        return Estimate(float(kept.mean()), NAN, NAN, n, dropped, confidence)
    low, high = _bootstrap_interval((kept,), np.mean, rng, confidence, n_resamples, method)
    return Estimate(float(kept.mean()), low, high, n, dropped, confidence)


def paired_bootstrap(
    a: ArrayLike,
    b: ArrayLike,
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    method: str = "percentile",
) -> Estimate:
    """Bootstrap CI of mean(a - b) over items scored by both methods (items are resampled as pairs)."""
    x, y, dropped = paired_values(a, b)
    est = mean_ci(x - y, rng=rng, confidence=confidence, n_resamples=n_resamples, method=method)
    return Estimate(est.estimate, est.low, est.high, est.n, dropped, confidence)


def mcnemar_exact(a_correct: ArrayLike, b_correct: ArrayLike) -> HypothesisTest:
    """Exact McNemar test (binomial on the discordant pairs) for paired binary outcomes; NaN pairs dropped.

    >>> mcnemar_exact([1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]).pvalue
    0.0625
    """
    x, y, dropped = paired_values(a_correct, b_correct)
    for name, arr in (("a_correct", x), ("b_correct", y)):
        if not np.isin(arr, (0.0, 1.0)).all():
            raise ValueError(f"{name}: McNemar needs binary 0/1 outcomes, got values {np.unique(arr)[:5]}")
    if x.size == 0:
        return HypothesisTest("mcnemar", NAN, NAN, 0, dropped)
    a, b = x.astype(bool), y.astype(bool)
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    res = mcnemar(table, exact=True)
    return HypothesisTest("mcnemar", float(res.statistic), float(res.pvalue), int(x.size), dropped)


def paired_permutation_test(
    a: ArrayLike,
    b: ArrayLike,
    *,
    rng: np.random.Generator,
    n_resamples: int = 10_000,
    alternative: str = "two-sided",
) -> HypothesisTest:
    """Paired permutation test of mean(a - b) = 0 (swaps a and b within pairs; exact when 2**n <= n_resamples)."""
    x, y, dropped = paired_values(a, b)
    if x.size < 2:
        diff = float(np.mean(x - y)) if x.size else NAN
        return HypothesisTest("permutation", diff, NAN, int(x.size), dropped)

    def mean_diff(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(u - v, axis=axis)

    res = scipy.stats.permutation_test(
        (x, y),
        mean_diff,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative=alternative,
        rng=rng,
    )
    return HypothesisTest("permutation", float(res.statistic), float(res.pvalue), int(x.size), dropped)


def adjust_pvalues(pvalues: ArrayLike, method: str = "holm", alpha: float = 0.05) -> dict[str, np.ndarray]:
    """Correct p-values for multiple comparisons (statsmodels multipletests); NaN p-values stay NaN, uncounted.

    >>> adjust_pvalues([0.01, 0.04, 0.03, 0.005])["p_adjusted"].tolist()
    [0.03, 0.06, 0.06, 0.02]
    """
    if method not in CORRECTIONS:
        raise ValueError(f"correction: unknown method {method!r}; choose one of {CORRECTIONS}")
    p = as_1d(pvalues, "pvalues")
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"pvalues: must lie in [0, 1], got {p[(p < 0) | (p > 1)][:5]}")
    adjusted, reject = np.full(p.shape, NAN), np.zeros(p.shape, dtype=bool)
    finite = ~np.isnan(p)
    if finite.any():
        # A NaN would still be counted in the family size by multipletests, so leave it out.
        reject[finite], adjusted[finite], _, _ = multipletests(p[finite], alpha=alpha, method=method)
    return {"p_adjusted": adjusted, "reject": reject}


def paired_effect_sizes(a: ArrayLike, b: ArrayLike) -> dict[str, float]:
    """Effect sizes of a - b on paired items: mean difference, Cohen's d_z and matched-pairs rank-biserial r.

    d_z = mean(d) / sd(d) is NaN when the differences have no spread. The rank-biserial correlation (Kerby 2014) is
    (T+ - T-) / (T+ + T-) from the Wilcoxon signed-rank sums over non-zero differences; NaN when every d is 0.

    >>> paired_effect_sizes([2.0, 3.0, 0.0, 5.0], [1.0, 1.0, 3.0, 1.0])["rank_biserial"]
    0.4
    """
    x, y, dropped = paired_values(a, b)
    d = x - y
    out = {"mean_difference": float(d.mean()) if d.size else NAN, "n": int(d.size), "n_dropped": dropped}
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    out["cohens_dz"] = float(d.mean()) / sd if sd > 0 else NAN
    nonzero = d[d != 0]
    if nonzero.size == 0:
        out["rank_biserial"] = NAN
    else:
        # With alternative="greater" scipy reports T+ (sum of ranks of positive differences).
        t_plus = float(scipy.stats.wilcoxon(nonzero, alternative="greater").statistic)
        total = nonzero.size * (nonzero.size + 1) / 2
        out["rank_biserial"] = (2 * t_plus - total) / total
    return out


def _seed_matrix(scores: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(scores, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]  # one task
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name}: need scores of shape (n_seeds, n_tasks), got {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name}: scores contain NaN; drop failed runs before aggregating across seeds")
    return arr


def interval_estimates(
    score_dict: Mapping[str, ArrayLike],
    aggregate: Callable[[np.ndarray], float] = rly_metrics.aggregate_iqm,
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    method: str = "percentile",
) -> dict[str, Estimate]:
    """Aggregate (default IQM) of each method's (n_seeds, n_tasks) scores with stratified-bootstrap CIs.

    Seeds are resampled independently within each task, as rliable's StratifiedBootstrap does.
    """
    out = {}
    for name, scores in score_dict.items():
        arr = _seed_matrix(scores, name)
        point = float(aggregate(arr))
        if arr.shape[0] < 2:
            out[name] = Estimate(point, NAN, NAN, arr.shape[0], 0, confidence)
            continue
        low, high = _bootstrap_interval(
            tuple(arr.T), lambda *cols: aggregate(np.stack(cols, axis=1)), rng, confidence, n_resamples, method
        )
        out[name] = Estimate(point, low, high, arr.shape[0], 0, confidence)
    return out


def probability_of_improvement(
    scores_x: ArrayLike,
    scores_y: ArrayLike,
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_resamples: int = 2_000,
    method: str = "percentile",
) -> Estimate:
    """P(X > Y) averaged over tasks (rliable) from (n_seeds, n_tasks) scores, with a stratified-bootstrap CI."""
    x, y = _seed_matrix(scores_x, "scores_x"), _seed_matrix(scores_y, "scores_y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"scores_x has {x.shape[1]} tasks but scores_y has {y.shape[1]}")
    point = float(rly_metrics.probability_of_improvement(x, y))
    n = min(x.shape[0], y.shape[0])
    if n < 2:
        return Estimate(point, NAN, NAN, n, 0, confidence)
    n_tasks = x.shape[1]

    def poi(*cols: np.ndarray) -> float:
        return rly_metrics.probability_of_improvement(np.stack(cols[:n_tasks], 1), np.stack(cols[n_tasks:], 1))

    low, high = _bootstrap_interval((*x.T, *y.T), poi, rng, confidence, n_resamples, method)
    return Estimate(point, low, high, n, 0, confidence)


# Up to this many pairs the p-value comes from all n! pairings (5,040 for 7), not the asymptotic formula.
EXACT_RANK_P_MAX_N = 7


def rank_correlation(
    x: ArrayLike,
    y: ArrayLike,
    *,
    rng: np.random.Generator,
    method: str = "spearman",
    confidence: float = 0.95,
    n_resamples: int = 10_000,
) -> RankCorrelation:
    """Spearman or Kendall correlation (scipy) between paired scores, with a percentile CI over resampled pairs.

    Resampling few points (e.g. 6 methods) sometimes draws a sample with constant ranks, which has no correlation;
    those resamples are left out of the interval and counted in `n_undefined`. With at most
    `EXACT_RANK_P_MAX_N` pairs the p-value is exact (all pairings enumerated).
    """
    funcs = {"spearman": scipy.stats.spearmanr, "kendall": scipy.stats.kendalltau}
    if method not in funcs:
        raise ValueError(f"method: unknown rank correlation {method!r}; choose 'spearman' or 'kendall'")
    u, v, dropped = paired_values(x, y)
    n = int(u.size)
    if n < 2 or np.ptp(u) == 0 or np.ptp(v) == 0:
        return RankCorrelation(method, NAN, NAN, NAN, NAN, n, dropped, 0, confidence)
    func = funcs[method]
    res = func(u, v)
    pvalue = float(res.pvalue)
    if n <= EXACT_RANK_P_MAX_N:  # scipy's asymptotic p is wrong for a handful of methods (0 for n = 3, rho = 1)
        pvalue = float(
            # Permuting u alone against a fixed v gives the n! pairings; passing both would permute each (n!^2).
            scipy.stats.permutation_test(
                (u,), lambda s: func(s, v).statistic, permutation_type="pairings", n_resamples=np.inf
            ).pvalue
        )

    def stat(s: np.ndarray, t: np.ndarray) -> float:
        if np.ptp(s) == 0 or np.ptp(t) == 0:
            return NAN  # undefined, and scipy would warn on every such resample
        return float(func(s, t).statistic)

    with warnings.catch_warnings():
        # scipy warns when its own interval is NaN; we compute the interval over the defined resamples below.
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        boot = scipy.stats.bootstrap(
            (u, v), stat, paired=True, vectorized=False, n_resamples=n_resamples, method="percentile", rng=rng
        ).bootstrap_distribution
    defined = boot[~np.isnan(boot)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(defined, [alpha, 1 - alpha]) if defined.size else (NAN, NAN)
    n_undefined = int(boot.size - defined.size)
    return RankCorrelation(
        method, float(res.statistic), float(low), float(high), pvalue, n, dropped, n_undefined, confidence
    )
