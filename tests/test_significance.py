import math

import numpy as np
import pytest

from harness import stats
from harness.significance import significance_table

NAN = float("nan")


def rng(seed=0):
    return np.random.default_rng(seed)


def test_significance_table_rows_tests_and_correction():
    g = rng(20)
    per_item = {
        "a": (g.random(60) < 0.8).astype(float),
        "b": (g.random(60) < 0.5).astype(float),
        "c": g.random(60),
    }
    subsets = ["x", "y", "z"] * 20
    rows = significance_table(per_item, [("a", "b"), ("a", "c")], rng=rng(), subsets=subsets, n_resamples=500)
    assert len(rows) == 2 * 4 and [r["subset"] for r in rows[:4]] == ["all", "x", "y", "z"]
    assert {r["test"] for r in rows[:4]} == {"mcnemar"} and {r["test"] for r in rows[4:]} == {"permutation"}
    assert [r["p_adjusted"] for r in rows] == pytest.approx(stats.adjust_pvalues([r["p"] for r in rows])["p_adjusted"])
    first = rows[0]
    assert first["estimate"] == pytest.approx(per_item["a"].mean() - per_item["b"].mean())
    assert first["ci_low"] <= first["estimate"] <= first["ci_high"] and first["n"] == 60
    expected = stats.mcnemar_exact(per_item["a"], per_item["b"]).pvalue
    assert first["p"] == pytest.approx(expected) and first["correction"] == "holm"
    keys = {"comparison", "subset", "estimate", "ci_low", "ci_high", "p", "p_adjusted", "cohens_dz", "rank_biserial"}
    assert keys <= set(first)
    # Subsets below min_subset_items get no row and do not enter the correction.
    small = ["x"] * 57 + ["y"] * 3
    kept = significance_table(per_item, [("a", "b")], rng=rng(), subsets=small, min_subset_items=5)
    assert [r["subset"] for r in kept] == ["all", "x"]


def test_significance_table_unscored_subset_and_errors():
    per_item = {"a": [1.0, 0.0, NAN, NAN], "b": [0.0, 0.0, 1.0, 1.0]}
    rows = significance_table(per_item, [("a", "b")], rng=rng(), subsets=["s", "s", "t", "t"], test="mcnemar")
    unscored = rows[2]
    assert unscored["subset"] == "t" and unscored["n"] == 0 and unscored["n_dropped"] == 2
    assert math.isnan(unscored["p"]) and math.isnan(unscored["p_adjusted"])
    with pytest.raises(ValueError, match="comparisons: unknown method 'z'"):
        significance_table(per_item, [("a", "z")], rng=rng())
    with pytest.raises(ValueError, match="per_item: methods must score the same items"):
        significance_table({"a": [1.0], "b": [1.0, 0.0]}, [("a", "b")], rng=rng())
    with pytest.raises(ValueError, match="subsets: 3 labels for 4 items"):
        significance_table(per_item, [("a", "b")], rng=rng(), subsets=["s"] * 3)
    with pytest.raises(ValueError, match="correction: unknown method 'hochberg'"):
        significance_table(per_item, [("a", "b")], rng=rng(), correction="hochberg")
    with pytest.raises(ValueError, match="test: unknown test 't'"):
        significance_table(per_item, [("a", "b")], rng=rng(), test="t")
    with pytest.raises(ValueError, match="reserved"):
        significance_table(per_item, [("a", "b")], rng=rng(), subsets=["all"] * 4)
