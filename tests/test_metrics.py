# ruff: noqa: B006, UP006, UP035
# (The reference block below is quoted verbatim, so its upstream style is kept.)
import ast
import importlib.util
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset

from harness.bench.metrics import (
    Accuracy,
    Agreement,
    best_of_n_accuracy,
    best_of_n_credit,
    item_results,
    macro_mean,
    pairwise_accuracy,
    pairwise_credit,
    per_subset,
    responses_in_order,
    rewardbench2_scores,
    rubric_agreement,
    summarize,
    ties_score,
)
from harness.types import PreferenceItem, user_chat

NAN = float("nan")

# ---------------------------------------------------------------------------------------------------------------
# Reference implementation, quoted verbatim from
#   repository: allenai/reward-bench
#   commit:     a0096928eb1d54edd3f6361374708cc68e738b79
#   file:       rewardbench/utils.py
#   functions:  reroll_and_score_dataset (RewardBench 2 best-of-N, 1/k tie credit),
#               _compute_prompt_stats and process_single_model (the Ties subset)
# scripts/run_v2.py at that repository calls reroll_and_score_dataset for every subset, then replaces the Ties
# subset's score with process_single_model(subset_dataset). Licence: Apache-2.0.
# fmt: off


def reroll_and_score_dataset(dataset, total_completions, cols_to_combine=["text", "scores"]):
    # Convert to pandas DataFrame for easier manipulation
    df = dataset.to_pandas()

    # Validate that sum of total_completions matches dataset length
    if sum(total_completions) != len(df):
        raise ValueError(
            f"Sum of total_completions ({sum(total_completions)}) does not equal dataset length ({len(df)})"
        )

    rerolled_rows = []
    current_idx = 0

    # Process each group with its specified number of completions
    for group_size in total_completions:
        group = df.iloc[current_idx : current_idx + group_size]

        # Create new row
        new_row = {}
        # print(group['scores'])
        # Handle text and score columns - combine into lists
        for col in cols_to_combine:
            new_row[col] = group[col].tolist()

        # penalty for ties
        scores = new_row["scores"]
        max_val = np.max(scores)
        new_row["results"] = (1 / np.sum(scores == max_val)) if scores[0] == max_val else 0

        # new_row["results"] = 1 if np.argmax(new_row["scores"]) == 0 else 0

        # Handle all other columns - verify they're identical and take first value
        other_columns = [col for col in df.columns if col not in cols_to_combine]
        for col in other_columns:
            values = group[col].unique()
            if len(values) != 1:
                raise ValueError(f"Column {col} has different values within group at index {current_idx}: {values}")
            new_row[col] = values[0]

        rerolled_rows.append(new_row)
        current_idx += group_size

    # Create new dataset
    rerolled_df = pd.DataFrame(rerolled_rows)
    rerolled_dataset = Dataset.from_pandas(rerolled_df)

    return rerolled_dataset


# Helper function for scoring ties subset
def _compute_prompt_stats(samples: List[Tuple[bool, float]]) -> Tuple[bool, float | None, float | None]:
    """
    Given a list of (is_correct, score) tuples for one prompt,
    return:
        accurate ................ True if every correct answer outscores the best wrong one
        different_correct_margin  Spread between best and worst correct answers (None if <2)
        correct_incorrect_margin  Gap between worst correct and best wrong (None if N/A)
    """
    correct_scores = [s for is_corr, s in samples if is_corr]
    incorrect_scores = [s for is_corr, s in samples if not is_corr]
    best_correct = max(correct_scores)
    worst_correct = min(correct_scores)
    best_incorrect = max(incorrect_scores)

    # Calculate the margins with correct scores, and also the margin between correct and incorrect scores
    different_correct_margin = best_correct - worst_correct if len(correct_scores) > 1 else None
    correct_incorrect_margin = worst_correct - best_incorrect
    accurate = correct_incorrect_margin > 0

    return accurate, different_correct_margin, correct_incorrect_margin


# Processing Ties Score
def process_single_model(dataset):
    """
    Process a single-model ties evaluation dataset and return
        (dataset_with_results_column, overall_score)
    Each row in the dataset contains a list of "scores", where the first "num_correct" correspond to
        correct answers, and the rest are incorrect. The "id" field is formatted as "sample_type:prompt_id",
        where sample_type is either "ref" for reference prompts with 1 correct answer or "tied" for tied samples
        with multiple correct answers.
    Overall score is essentially 60% accuracy, 40% margin. Accuracy is broken down equally
        across ref and tied accuracy, while margin is broken down into whether the margin between
        correct answers < margin between correct and incorrect answers for tied prompts only (correctness_preferred)
        and whether this margin also holds when the margin between correct and incorrect answers is the min of the
        margin for a tied prompt and its associated reference prompt (correctness_preferred_hard).
    """
    grouped_samples: Dict[Tuple[str, int], List[Tuple[bool, float]]] = defaultdict(list)

    for sample in dataset:
        # Split samples into ref and tied
        sample_type, prompt_id_str = sample["id"].split(":")
        prompt_id = int(prompt_id_str)

        # Each score position i is “correct” if i < num_correct
        for i, raw_score in enumerate(sample["scores"]):
            score = raw_score[0] if isinstance(raw_score, list) else raw_score
            grouped_samples[(sample_type, prompt_id)].append((i < sample["num_correct"], score))

    # Calculate per-prompt stats
    ref_stats = {}
    tied_stats = {}

    for (sample_type, prompt_id), samples in grouped_samples.items():
        stats = _compute_prompt_stats(samples)
        if sample_type == "ref":
            ref_stats[prompt_id] = stats
        else:  # "tied"
            tied_stats[prompt_id] = stats

    # Calculate global metrics
    # Average accuracy (element 0 of each tuple) over ref and tied samples
    ref_accuracy = np.mean([s[0] for s in ref_stats.values()]) if ref_stats else 0.0
    tied_accuracy = np.mean([s[0] for s in tied_stats.values()]) if tied_stats else 0.0

    # Margins: compute whether margin within correct answers < margin between correct and incorrect answers
    all_prompts = set(ref_stats) & set(tied_stats)

    # correct margin is element 1 in stats tuple, correct-incorrect margin is element 2
    diff_corr_margin = np.array([tied_stats[pid][1] for pid in all_prompts])
    corr_incorrect_ties = np.array([tied_stats[pid][2] for pid in all_prompts])
    corr_incorrect_ref = np.array([ref_stats[pid][2] for pid in all_prompts])

    correctness_preferred = np.mean(corr_incorrect_ties > diff_corr_margin)
    correctness_preferred_hard = np.mean(np.minimum(corr_incorrect_ref, corr_incorrect_ties) > diff_corr_margin)

    # Tie-breaking term, optional, not much effect in practice
    # Normalised gap, then tanh to keep it in (‑1, 1)
    margin_scores = np.tanh(np.minimum(corr_incorrect_ref, corr_incorrect_ties) / diff_corr_margin - 1)
    # if nan (divide by 0), set to 0
    margin_scores = np.nan_to_num(margin_scores, nan=0.0)
    correctness_margin_score = float(np.mean(margin_scores))

    # Compute the overall score
    overall_score = (
        0.30 * tied_accuracy
        + 0.30 * ref_accuracy
        + 0.20 * correctness_preferred
        + 0.20 * correctness_preferred_hard
        + 0.01 * correctness_margin_score
    )

    # Package results — there is less of a sense of per-prompt results for the Ties subset,
    # as overall_score is computed across the subset, so set "results" to None for clarity
    if "results" in dataset.column_names:
        dataset = dataset.remove_columns(["results"])
    results_dataset = dataset.add_column("results", [None] * len(dataset))

    return results_dataset, float(overall_score)


# fmt: on
# ----------------------------------------------------------------------------------------------------- end quote


def _bon_with_reference(reroll, chosen, rejected_list):
    """Run reward-bench's best-of-N scoring on our arrays, unrolled the way scripts/run_v2.py unrolls them."""
    rows = []
    for i, (c, rejected) in enumerate(zip(chosen, rejected_list, strict=True)):
        for j, s in enumerate([c, *rejected]):
            rows.append({"text": f"{i}-{j}", "scores": float(s), "id": str(i), "subset": "Focus"})
    totals = [1 + len(r) for r in rejected_list]
    return np.array(reroll(Dataset.from_list(rows), totals)["results"], dtype=float)


def _ties_with_reference(process, ids, chosen_list, rejected_list):
    rows = [
        {"id": i, "scores": [float(s) for s in (*c, *r)], "num_correct": len(c)}
        for i, c, r in zip(ids, chosen_list, rejected_list, strict=True)
    ]
    return process(Dataset.from_list(rows))[1]


def _random_bon(rng, n):
    # Integer scores on a small range make exact ties (two-, three- and four-way) frequent.
    chosen = rng.integers(0, 4, size=n).astype(float)
    rejected = [rng.integers(0, 4, size=rng.integers(1, 6)).astype(float) for _ in range(n)]
    return chosen, rejected


def _random_ties(rng, n_prompts, distinct_correct=False):
    ids, chosen, rejected = [], [], []
    for p in range(n_prompts):
        ids.append(f"ref:{p}")
        chosen.append(rng.integers(0, 6, size=1).astype(float))
        rejected.append(rng.integers(0, 6, size=3).astype(float))
        k = int(rng.integers(2, 5))
        tied = rng.choice(6, size=k, replace=False) if distinct_correct else rng.integers(0, 6, size=k)
        ids.append(f"tied:{p}")
        chosen.append(tied.astype(float))
        rejected.append(rng.integers(0, 6, size=int(rng.integers(1, 4))).astype(float))
    return ids, chosen, rejected


# --- equivalence with reward-bench ----------------------------------------------------------------------------


def test_best_of_n_matches_reward_bench_verbatim_including_ties():
    chosen, rejected = _random_bon(np.random.default_rng(0), 300)
    ours = best_of_n_credit(chosen, rejected)
    theirs = _bon_with_reference(reroll_and_score_dataset, chosen, rejected)
    assert np.array_equal(ours, theirs)
    assert {0.0, 0.5, 1 / 3, 0.25, 1.0} <= set(ours.tolist())  # the draw really exercised k-way ties
    assert best_of_n_accuracy(chosen, rejected).value == theirs.mean()


def test_pairwise_tie_credit_is_reward_bench_two_way_tie():
    chosen, rejected = np.array([1.0, 2.0, 2.0]), np.array([2.0, 2.0, 1.0])
    theirs = _bon_with_reference(reroll_and_score_dataset, chosen, [[r] for r in rejected])
    assert np.array_equal(pairwise_credit(chosen, rejected), theirs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ties_score_matches_reward_bench_verbatim(seed):
    ids, chosen, rejected = _random_ties(np.random.default_rng(seed), 40)
    with np.errstate(divide="ignore", invalid="ignore"):  # the reference divides by zero spreads
        theirs = _ties_with_reference(process_single_model, ids, chosen, rejected)
    ours = ties_score(ids, chosen, rejected)
    assert ours.value == theirs
    assert ours.n_unscored == 0


def test_ties_score_zero_spread_branch_matches_reference():
    # Two equal correct answers: spread 0, so the reference's margin ratio is +inf (tanh -> 1).
    ids = ["ref:0", "tied:0"]
    chosen, rejected = [[5.0], [4.0, 4.0]], [[1.0, 2.0], [3.0]]
    with np.errstate(divide="ignore"):
        theirs = _ties_with_reference(process_single_model, ids, chosen, rejected)
    assert ties_score(ids, chosen, rejected).value == theirs == pytest.approx(0.3 + 0.3 + 0.2 + 0.2 + 0.01)


def _installed_reward_bench_source():
    """rewardbench/utils.py from an installed wheel or $REWARDBENCH_SRC, found without importing the package."""
    spec = importlib.util.find_spec("rewardbench")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "utils.py"
    root = os.environ.get("REWARDBENCH_SRC")
    return Path(root) / "rewardbench" / "utils.py" if root else None


def _load_reward_bench_scoring(path):
    """Exec only the scoring functions of reward-bench's utils.py.

    Importing `rewardbench` pulls in fastchat and model code written for transformers==4.51 (it fails on
    transformers 5), but the scoring functions need only numpy, pandas and datasets.
    """
    wanted = {"reroll_and_score_dataset", "process_single_model", "sample_stats", "_compute_prompt_stats"}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = ast.Module([n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted], [])
    namespace = {"np": np, "pd": pd, "Dataset": Dataset, "math": math, "defaultdict": defaultdict}
    namespace.update(Dict=Dict, List=List, Tuple=Tuple)
    exec(compile(module, str(path), "exec"), namespace)
    return namespace


_REWARD_BENCH_SRC = _installed_reward_bench_source()
_MISSING_REWARD_BENCH = (
    "reward-bench source not found: pip install --no-deps rewardbench==0.1.4 (or set REWARDBENCH_SRC)"
)


# CI installs the package, so there a missing source is a failure, not a silent skip.
@pytest.mark.skipif(
    not os.environ.get("CI") and (_REWARD_BENCH_SRC is None or not _REWARD_BENCH_SRC.is_file()),
    reason=_MISSING_REWARD_BENCH,
)
def test_matches_installed_reward_bench_package():
    assert _REWARD_BENCH_SRC is not None and _REWARD_BENCH_SRC.is_file(), _MISSING_REWARD_BENCH
    ref = _load_reward_bench_scoring(_REWARD_BENCH_SRC)
    chosen, rejected = _random_bon(np.random.default_rng(7), 300)
    assert np.array_equal(
        best_of_n_credit(chosen, rejected), _bon_with_reference(ref["reroll_and_score_dataset"], chosen, rejected)
    )
    # rewardbench 0.1.4 (PyPI) predates the a0096928 Ties rewrite: it leaves prompts whose correct answers tie
    # exactly out of the margin term, where a0096928 counts them as +-1. Distinct correct scores avoid that case.
    ids, chosen, rejected = _random_ties(np.random.default_rng(7), 40, distinct_correct=True)
    theirs = _ties_with_reference(ref["process_single_model"], ids, chosen, rejected)
    assert ties_score(ids, chosen, rejected).value == theirs


# --- hand-computed values -------------------------------------------------------------------------------------


def test_pairwise_accuracy_counts_unscored_apart():
    acc = pairwise_accuracy([2, 1, 0, NAN, 5], [1, 1, 1, 0, NAN])
    assert acc == Accuracy(value=0.5, n_scored=3, n_unscored=2)
    assert acc.value_unscored_as_wrong == pytest.approx(1.5 / 5)


def test_summarize_edge_cases():
    assert math.isnan(summarize([]).value) and summarize([]).n_scored == 0
    only_nan = summarize([NAN, NAN])
    assert math.isnan(only_nan.value) and only_nan.n_unscored == 2 and only_nan.value_unscored_as_wrong == 0.0
    assert math.isnan(summarize([]).value_unscored_as_wrong)


def test_pairwise_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="equal length"):
        pairwise_credit([1, 2], [1])


def test_best_of_n_hand_computed():
    credit = best_of_n_credit(
        [3, 3, 3, 1, 3, 2],
        [[1, 2, 0], [3, 0, 0], [3, 3, 3], [2, 0, 0], [1, NAN, 0], [2]],
    )
    assert credit[:4].tolist() == [1.0, 0.5, 0.25, 0.0]
    assert math.isnan(credit[4])  # a NaN anywhere in the item leaves it unscored, never a win or a loss
    assert credit[5] == 0.5
    acc = best_of_n_accuracy([3, 1], [[NAN], [0, 0]])
    assert acc == Accuracy(1.0, 1, 1)


def test_best_of_n_input_checks():
    with pytest.raises(ValueError, match="one chosen score per item"):
        best_of_n_credit([1, 2], [[0]])
    with pytest.raises(ValueError, match="at least one rejected"):
        best_of_n_credit([1], [[]])


def test_per_subset_and_macro_mean():
    by = per_subset([1, 0, 0.5, 1, NAN], ["b", "b", "a", "a", "c"])
    assert list(by) == ["a", "b", "c"]
    assert by["a"] == Accuracy(0.75, 2, 0) and by["b"] == Accuracy(0.5, 2, 0)
    assert by["c"].n_unscored == 1 and math.isnan(by["c"].value)
    assert macro_mean({"a": by["a"], "b": by["b"]}) == pytest.approx(0.625)
    assert math.isnan(macro_mean(by))  # a subset with nothing scored is not silently skipped
    assert macro_mean({"x": 0.2, "y": 0.4}) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="one subset per value"):
        per_subset([1, 0], ["a"])


def test_rubric_agreement_hand_computed():
    # Prompt p: expert 3 > 2 = 2 > 1; method 9, 5, 7, 5.  Prompt q: one NaN.  Prompt r: single response.
    method = [9, 5, 7, 5, 1, NAN, 4]
    expert = [3, 2, 2, 1, 1, 0, 2]
    groups = ["p", "p", "p", "p", "q", "q", "r"]
    # p pairs: (0,1) agree; (0,2) agree; (0,3) agree; (1,2) expert tie -> excluded; (1,3) method tie -> 0.5;
    # (2,3) agree.  q: (4,5) unscored.
    assert rubric_agreement(method, expert, groups) == Agreement(4.5 / 5, 5, 1, 1)


def test_rubric_agreement_disagreement_and_empty():
    assert rubric_agreement([1, 2], [2, 1], ["p", "p"]).value == 0.0
    none = rubric_agreement([1, 1], [1, 1], ["p", "p"])
    assert math.isnan(none.value) and none.n_reference_ties == 1 and none.n_pairs == 0


def test_ties_score_hand_computed():
    # Prompt 0: ref correct 5 vs incorrect [1, 2] -> accurate, gap 3.  tied correct [4, 3] vs [2] -> accurate,
    # spread 1, gap 1.  Prompt 1: ref correct 1 vs [2] -> inaccurate, gap -1; tied [6, 2] vs [3] -> inaccurate,
    # spread 4, gap -1.
    ids = ["ref:0", "tied:0", "ref:1", "tied:1"]
    chosen = [[5], [4, 3], [1], [6, 2]]
    rejected = [[1, 2], [2], [2], [3]]
    got = ties_score(ids, chosen, rejected)
    assert (got.ref_accuracy, got.tied_accuracy) == (0.5, 0.5)
    # preferred: gap_tied > spread -> prompt 0: 1 > 1 no; prompt 1: -1 > 4 no -> 0.  hard: min(gaps) > spread: 0.
    assert (got.correctness_preferred, got.correctness_preferred_hard) == (0.0, 0.0)
    margin = (math.tanh(min(3, 1) / 1 - 1) + math.tanh(min(-1, -1) / 4 - 1)) / 2
    assert got.margin_score == pytest.approx(margin)
    assert got.value == pytest.approx(0.3 * 0.5 + 0.3 * 0.5 + 0.01 * margin)


def test_ties_score_leaves_out_unscored_and_checks_ids():
    got = ties_score(["ref:0", "tied:0", "tied:1"], [[2], [3, 3], [NAN, 1]], [[1], [1], [0]])
    assert got.n_unscored == 1 and got.tied_accuracy == 1.0
    no_pairs = ties_score(["ref:0"], [[1]], [[0]])
    assert math.isnan(no_pairs.value) and no_pairs.ref_accuracy == 1.0
    with pytest.raises(ValueError, match="ref:N"):
        ties_score(["x:1"], [[1]], [[0]])
    with pytest.raises(ValueError, match="twice"):
        ties_score(["ref:1", "ref:1"], [[1], [1]], [[0], [0]])


def _item(item_id, n_chosen, n_rejected, subset="s"):
    chosen = tuple(f"c{i}" for i in range(n_chosen))
    rejected = tuple(f"r{i}" for i in range(n_rejected))
    return PreferenceItem(item_id, tuple(user_chat(f"q {item_id}")), chosen, rejected, subset)


def test_item_results_round_trip_and_credits():
    items = [_item("a", 1, 1), _item("b", 1, 3), _item("c", 2, 2), _item("d", 1, 1)]
    prompts, responses = responses_in_order(items)
    assert responses[:6] == ["c0", "r0", "c0", "r0", "r1", "r2"] and prompts[2] == [{"role": "user", "content": "q b"}]
    scores = [1, 1, 5, 5, 0, 2, 4, 1, 3, 2, NAN, 0]
    res = item_results(items, scores)
    assert [r.id for r in res] == ["a", "b", "c", "d"]
    assert res[0].credit == 0.5 and res[0].pair_credit == 0.5
    assert res[1].credit == 0.5 and res[1].pair_credit == pytest.approx((0.5 + 1 + 1) / 3)
    # c: chosen [4, 1] vs rejected [3, 2]: best-of-N per chosen 1 and 0 -> 0.5; pairs won 2 of 4 -> 0.5.
    assert res[2].chosen_scores == (4.0, 1.0) and res[2].credit == 0.5 and res[2].pair_credit == 0.5
    assert math.isnan(res[3].credit) and math.isnan(res[3].pair_credit)
    assert res[0].to_dict()["subset"] == "s"
    with pytest.raises(ValueError, match="expected 12 scores"):
        item_results(items, scores[:-1])


def test_rewardbench2_scores_uses_ties_rule_for_ties_subset():
    items = [_item("x/1", 1, 3, "Focus"), _item("x/2", 1, 3, "Math")]
    items += [_item("reward-bench-2/ref:0", 1, 2, "Ties"), _item("reward-bench-2/tied:0", 2, 1, "Ties")]
    scores = [3, 1, 1, 1] + [1, 1, 0, 0] + [5, 1, 2] + [4, 3, 2]
    got = rewardbench2_scores(item_results(items, scores))
    assert got["Focus"] == 1.0 and got["Math"] == 0.5
    assert got["Ties"] == ties_score(["ref:0", "tied:0"], [[5], [4, 3]], [[1, 2], [2]]).value
    assert got["overall"] == pytest.approx((1.0 + 0.5 + got["Ties"]) / 3)
