"""The significance table of a study: every paired comparison of two methods, overall and per subset.

One row per (comparison, subset) with the mean difference and its paired-bootstrap CI, an exact McNemar or paired
permutation test, effect sizes, and p-values corrected over the whole table as one family (`harness.stats` holds
the tests themselves).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from harness.stats import (
    CORRECTIONS,
    adjust_pvalues,
    as_1d,
    mcnemar_exact,
    paired_bootstrap,
    paired_effect_sizes,
    paired_permutation_test,
)

OVERALL = "all"
TESTS = ("auto", "permutation", "mcnemar")


def _is_binary(arr: np.ndarray) -> bool:
    return bool(np.isin(arr[~np.isnan(arr)], (0.0, 1.0)).all())


def _comparison_row(
    a: np.ndarray, b: np.ndarray, test: str, rng: np.random.Generator, confidence: float, n_resamples: int
) -> dict[str, Any]:
    diff = paired_bootstrap(a, b, rng=rng, confidence=confidence, n_resamples=n_resamples)
    if test == "auto":
        test = "mcnemar" if _is_binary(a) and _is_binary(b) else "permutation"
    if test == "mcnemar":
        result = mcnemar_exact(a, b)
    else:
        result = paired_permutation_test(a, b, rng=rng, n_resamples=n_resamples)
    effects = paired_effect_sizes(a, b)
    return {
        "n": diff.n,
        "n_dropped": diff.n_dropped,
        "estimate": diff.estimate,
        "ci_low": diff.low,
        "ci_high": diff.high,
        "test": test,
        "p": result.pvalue,
        "cohens_dz": effects["cohens_dz"],
        "rank_biserial": effects["rank_biserial"],
    }


def _subset_masks(subsets: Sequence[str] | None, n_items: int, min_items: int = 1) -> dict[str, np.ndarray]:
    """Item masks for the overall row and each subset of at least `min_items` items, in sorted subset order."""
    masks = {OVERALL: np.ones(n_items, dtype=bool)}
    if subsets is None:
        return masks
    labels = np.asarray(list(subsets), dtype=object)
    if labels.size != n_items:
        raise ValueError(f"subsets: {labels.size} labels for {n_items} items")
    if OVERALL in set(labels.tolist()):
        raise ValueError(f"subsets: the name {OVERALL!r} is reserved for the overall row")
    groups = {group: labels == group for group in sorted(set(labels.tolist()))}
    return masks | {group: mask for group, mask in groups.items() if mask.sum() >= min_items}


def significance_table(
    per_item: Mapping[str, ArrayLike],
    comparisons: Sequence[tuple[str, str]],
    *,
    rng: np.random.Generator,
    subsets: Sequence[str] | None = None,
    min_subset_items: int = 1,
    test: str = "auto",
    correction: str = "holm",
    alpha: float = 0.05,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
) -> list[dict[str, Any]]:
    """One row per (comparison, subset): mean difference a - b with CI, p, corrected p and effect sizes.

    `per_item` maps each method to per-item scores over the same items (NaN = unscored). Every row, overall and
    per subset, belongs to one family for the correction; subsets with fewer than `min_subset_items` items get no
    row (and so cost the family nothing). `test="auto"` uses exact McNemar when both methods' scores are 0/1 and the
    paired permutation test otherwise.
    """
    if test not in TESTS:
        raise ValueError(f"test: unknown test {test!r}; choose one of {TESTS}")
    if correction not in CORRECTIONS:  # checked before the resampling, not after it
        raise ValueError(f"correction: unknown method {correction!r}; choose one of {CORRECTIONS}")
    arrays = {name: as_1d(values, f"per_item[{name!r}]") for name, values in per_item.items()}
    sizes = {name: arr.size for name, arr in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"per_item: methods must score the same items, got lengths {sizes}")
    masks = _subset_masks(subsets, next(iter(sizes.values()), 0), min_subset_items)
    rows = []
    for method_a, method_b in comparisons:
        for name in (method_a, method_b):
            if name not in arrays:
                raise ValueError(f"comparisons: unknown method {name!r}; known: {sorted(arrays)}")
        for group, mask in masks.items():
            row = {
                "comparison": f"{method_a} vs {method_b}",
                "method_a": method_a,
                "method_b": method_b,
                "subset": group,
            }
            a, b = arrays[method_a][mask], arrays[method_b][mask]
            rows.append(row | _comparison_row(a, b, test, rng, confidence, n_resamples))
    adjusted = adjust_pvalues([row["p"] for row in rows], method=correction, alpha=alpha)
    for row, p_adj, reject in zip(rows, adjusted["p_adjusted"], adjusted["reject"], strict=True):
        row.update(p_adjusted=float(p_adj), reject=bool(reject), correction=correction)
    return rows
