"""Static-benchmark metrics: pure functions from reward scores to accuracies (numpy in, numbers out, no model).

Conventions shared by every function here:
- Higher score = better response. A NaN score means the method could not score that response ("unscored").
- An item or pair with any NaN score is *unscored*: its credit is NaN, it is left out of the mean, and it is
  counted in `n_unscored`. It is never a win and never silently a loss; `Accuracy.value_unscored_as_wrong` gives
  the pessimistic number when a report needs one.
- Exact score ties earn partial credit (1/k when k responses share the top score), as RewardBench 2 does.

The RewardBench 2 rules follow allenai/reward-bench @ a0096928eb1d54edd3f6361374708cc68e738b79,
`rewardbench/utils.py`: `reroll_and_score_dataset` (best-of-N with 1/k tie credit) and `process_single_model` +
`_compute_prompt_stats` (the Ties subset). tests/test_metrics.py checks both against that code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from harness.types import Chat, PreferenceItem

TIES_SUBSET = "Ties"


@dataclass(frozen=True)
class Accuracy:
    """Mean credit over the scored items, with the counts needed to read it honestly."""

    value: float
    n_scored: int
    n_unscored: int

    @property
    def value_unscored_as_wrong(self) -> float:
        """The accuracy if every unscored item counted as a loss (a lower bound)."""
        total = self.n_scored + self.n_unscored
        if total == 0:
            return float("nan")
        return self.value * self.n_scored / total if self.n_scored else 0.0


def summarize(credits: ArrayLike) -> Accuracy:
    """Mean of per-item credits in [0, 1], leaving out (and counting) NaN = unscored items.

    >>> summarize([1.0, 0.5, float("nan"), 0.0])
    Accuracy(value=0.5, n_scored=3, n_unscored=1)
    """
    arr = np.asarray(credits, dtype=float)
    scored = ~np.isnan(arr)
    n_scored = int(scored.sum())
    value = float(arr[scored].mean()) if n_scored else float("nan")
    return Accuracy(value, n_scored, int(arr.size - n_scored))


def pairwise_credit(chosen_scores: ArrayLike, rejected_scores: ArrayLike) -> np.ndarray:
    """Per-pair credit: 1 if chosen > rejected, 0.5 on an exact tie, 0 if lower, NaN if either is unscored.

    >>> pairwise_credit([2.0, 1.0, 0.0, float("nan")], [1.0, 1.0, 1.0, 0.0]).tolist()
    [1.0, 0.5, 0.0, nan]
    """
    chosen, rejected = np.asarray(chosen_scores, dtype=float), np.asarray(rejected_scores, dtype=float)
    if chosen.shape != rejected.shape or chosen.ndim != 1:
        raise ValueError(f"need two 1-D arrays of equal length, got shapes {chosen.shape} and {rejected.shape}")
    credit = np.where(chosen > rejected, 1.0, np.where(chosen == rejected, 0.5, 0.0))
    credit[np.isnan(chosen) | np.isnan(rejected)] = np.nan
    return credit


def pairwise_accuracy(chosen_scores: ArrayLike, rejected_scores: ArrayLike) -> Accuracy:
    """Pairwise accuracy with ties as 0.5 and unscored pairs counted apart (see `pairwise_credit`)."""
    return summarize(pairwise_credit(chosen_scores, rejected_scores))


def _best_of_n_one(chosen: float, rejected: np.ndarray) -> float:
    scores = np.concatenate(([chosen], rejected))
    if np.isnan(scores).any():
        return float("nan")
    top = scores.max()
    # RewardBench 2: credit 1/k when the chosen shares the top score with k-1 rejected responses, else 0.
    return float(1.0 / np.sum(scores == top)) if chosen == top else 0.0


def best_of_n_credit(chosen_scores: ArrayLike, rejected_scores_list: Sequence[ArrayLike]) -> np.ndarray:
    """Per-item best-of-N credit: the chosen must outscore all of its rejected (ragged lists allowed).

    >>> best_of_n_credit([3.0, 3.0, 1.0], [[1.0, 2.0, 0.0], [3.0, 3.0, 0.0], [2.0, 0.0, 0.0]]).tolist()
    [1.0, 0.3333333333333333, 0.0]
    """
    chosen = np.asarray(chosen_scores, dtype=float)
    if chosen.ndim != 1 or len(chosen) != len(rejected_scores_list):
        raise ValueError(f"need one chosen score per item: {chosen.shape} vs {len(rejected_scores_list)} items")
    rejected = [np.asarray(r, dtype=float).reshape(-1) for r in rejected_scores_list]
    if any(r.size == 0 for r in rejected):
        raise ValueError("every item needs at least one rejected score")
    return np.array([_best_of_n_one(c, r) for c, r in zip(chosen, rejected, strict=True)])


def best_of_n_accuracy(chosen_scores: ArrayLike, rejected_scores_list: Sequence[ArrayLike]) -> Accuracy:
    """RewardBench 2 best-of-N accuracy (1/k tie credit), unscored items counted apart."""
    return summarize(best_of_n_credit(chosen_scores, rejected_scores_list))


def per_subset(values: ArrayLike, subsets: Sequence[str]) -> dict[str, Accuracy]:
    """Summarize per-item credits by subset, in sorted subset order.

    >>> {k: v.value for k, v in per_subset([1, 0, 1, float("nan")], ["a", "a", "b", "b"]).items()}
    {'a': 0.5, 'b': 1.0}
    """
    arr = np.asarray(values, dtype=float)
    labels = np.asarray(subsets, dtype=object)
    if arr.shape != labels.shape:
        raise ValueError(f"need one subset per value: {arr.shape} vs {labels.shape}")
    return {name: summarize(arr[labels == name]) for name in sorted(set(subsets))}


def macro_mean(by_subset: Mapping[str, Accuracy | float]) -> float:
    """Unweighted mean over subsets; NaN if any subset has no scored item (so a gap is never hidden)."""
    values = [v.value if isinstance(v, Accuracy) else float(v) for v in by_subset.values()]
    return float(np.mean(values)) if values else float("nan")


@dataclass(frozen=True)
class Agreement:
    """Pairwise ordering agreement between a method and a reference judge."""

    value: float
    n_pairs: int
    n_reference_ties: int
    n_unscored: int


def rubric_agreement(method_scores: ArrayLike, expert_scores: ArrayLike, groups: Sequence[Any]) -> Agreement:
    """Fraction of within-prompt response pairs the method orders as the expert-rubric judge does.

    Pairs are formed only inside a group (one group = the responses to one prompt). A pair with any NaN score is
    unscored and counted apart; a pair the expert scores equal is excluded (it has no order to agree with) and
    counted in `n_reference_ties`; a pair the method scores equal earns 0.5.

    >>> rubric_agreement([3, 2, 2, 0], [1.0, 0.5, 0.0, 0.0], ["p", "p", "p", "q"])
    Agreement(value=0.8333333333333334, n_pairs=3, n_reference_ties=0, n_unscored=0)
    """
    method, expert = np.asarray(method_scores, dtype=float), np.asarray(expert_scores, dtype=float)
    labels = np.asarray(groups, dtype=object)
    if not method.shape == expert.shape == labels.shape or method.ndim != 1:
        raise ValueError(f"need equal-length 1-D inputs, got {method.shape}, {expert.shape}, {labels.shape}")
    credits, ties, unscored = [], 0, 0
    for name in dict.fromkeys(labels.tolist()):
        idx = np.flatnonzero(labels == name)
        i, j = np.triu_indices(len(idx), k=1)
        m_diff, e_diff = method[idx[i]] - method[idx[j]], expert[idx[i]] - expert[idx[j]]
        nan = np.isnan(m_diff) | np.isnan(e_diff)
        tie = ~nan & (e_diff == 0)
        keep = ~nan & ~tie
        unscored, ties = unscored + int(nan.sum()), ties + int(tie.sum())
        agree = np.sign(m_diff[keep]) * np.sign(e_diff[keep])  # 1 agree, 0 method tie, -1 disagree
        credits.append((agree + 1) / 2)
    flat = np.concatenate(credits) if credits else np.array([])
    return Agreement(float(flat.mean()) if flat.size else float("nan"), int(flat.size), ties, unscored)


@dataclass(frozen=True)
class TiesScore:
    """RewardBench 2's Ties subset score and its parts (see `ties_score`)."""

    value: float
    ref_accuracy: float
    tied_accuracy: float
    correctness_preferred: float
    correctness_preferred_hard: float
    margin_score: float
    n_unscored: int


def _prompt_stats(correct: np.ndarray, incorrect: np.ndarray) -> tuple[bool, float | None, float]:
    different_correct = float(correct.max() - correct.min()) if correct.size > 1 else None
    correct_incorrect = float(correct.min() - incorrect.max())
    return correct_incorrect > 0, different_correct, correct_incorrect


def _ties_key(item_id: str) -> tuple[str, int]:
    kind, _, number = item_id.rsplit("/", 1)[-1].partition(":")
    if kind not in ("ref", "tied") or not number.isdigit():
        raise ValueError(f"Ties item id must end in 'ref:N' or 'tied:N', got {item_id!r}")
    return kind, int(number)


def ties_score(
    ids: Sequence[str], chosen_scores: Sequence[ArrayLike], rejected_scores: Sequence[ArrayLike]
) -> TiesScore:
    """RewardBench 2 Ties score: 0.3 tied acc + 0.3 ref acc + 0.2 + 0.2 margin checks + 0.01 margin term.

    `ids` end in "ref:N" (one correct answer) or "tied:N" (several correct answers to the same prompt N); chosen
    = correct answers, rejected = incorrect ones. A prompt is accurate when every correct answer outscores every
    incorrect one. The margin checks, over prompts N with both a ref and a tied item, ask whether the gap between
    correct and incorrect answers exceeds the spread among correct answers. Items with a NaN score are left out
    and counted in `n_unscored`. Follows reward-bench @ a0096928 exactly, including NaN when no prompt has both.
    """
    stats: dict[str, dict[int, tuple[bool, float | None, float]]] = {"ref": {}, "tied": {}}
    n_unscored = 0
    for item_id, chosen, rejected in zip(ids, chosen_scores, rejected_scores, strict=True):
        kind, number = _ties_key(item_id)
        if number in stats[kind]:
            raise ValueError(f"Ties item {item_id!r} appears twice")
        correct, incorrect = np.asarray(chosen, dtype=float).ravel(), np.asarray(rejected, dtype=float).ravel()
        if np.isnan(correct).any() or np.isnan(incorrect).any():
            n_unscored += 1
            continue
        stats[kind][number] = _prompt_stats(correct, incorrect)
    ref, tied = stats["ref"], stats["tied"]
    ref_acc = float(np.mean([s[0] for s in ref.values()])) if ref else 0.0
    tied_acc = float(np.mean([s[0] for s in tied.values()])) if tied else 0.0
    common = sorted(set(ref) & set(tied))
    if not common:  # the reference's means over no prompts are NaN, and so is its score
        nan = float("nan")
        return TiesScore(nan, ref_acc, tied_acc, nan, nan, nan, n_unscored)
    if any(tied[n][1] is None for n in common):
        raise ValueError("every 'tied' item needs at least two chosen (correct) responses")
    spread = np.array([tied[n][1] for n in common], dtype=float)
    gap_tied = np.array([tied[n][2] for n in common], dtype=float)
    gap_hard = np.minimum(np.array([ref[n][2] for n in common], dtype=float), gap_tied)
    with np.errstate(divide="ignore", invalid="ignore"):  # the reference divides by a zero spread too
        preferred, preferred_hard = np.mean(gap_tied > spread), np.mean(gap_hard > spread)
        margin = float(np.mean(np.nan_to_num(np.tanh(gap_hard / spread - 1), nan=0.0)))
    value = 0.3 * tied_acc + 0.3 * ref_acc + 0.2 * preferred + 0.2 * preferred_hard + 0.01 * margin
    return TiesScore(float(value), ref_acc, tied_acc, float(preferred), float(preferred_hard), margin, n_unscored)


@dataclass(frozen=True)
class ItemResult:
    """One preference item's scores and credits; `credit` and `pair_credit` are NaN when any score is NaN."""

    id: str
    subset: str
    source: str
    chosen_scores: tuple[float, ...]
    rejected_scores: tuple[float, ...]
    credit: float
    pair_credit: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN stays NaN; the run store decides how to encode it)."""
        return asdict(self)


def responses_in_order(items: Sequence[PreferenceItem]) -> tuple[list[Chat], list[str]]:
    """Flatten items to (prompts, responses) for `RewardMethod.score`: per item, its chosen then its rejected."""
    prompts: list[Chat] = []
    responses: list[str] = []
    for item in items:
        for response in item.chosen + item.rejected:
            prompts.append(list(item.prompt))
            responses.append(response)
    return prompts, responses


def item_results(items: Sequence[PreferenceItem], scores: Sequence[float]) -> list[ItemResult]:
    """Split flat scores (in `responses_in_order` order) back into per-item results.

    `credit` is the best-of-N credit averaged over the item's chosen responses, each judged against all rejected
    ones (for one chosen and one rejected it equals the pairwise credit). `pair_credit` is the fraction of
    (chosen, rejected) pairs won, ties 0.5 (RM-Bench's average accuracy for 3 x 3 items). For RewardBench 2's
    Ties subset neither is the official score: use `ties_score` (as `rewardbench2_scores` does).
    """
    flat = np.asarray(scores, dtype=float)
    expected = sum(len(item.chosen) + len(item.rejected) for item in items)
    if flat.shape != (expected,):
        raise ValueError(f"expected {expected} scores for {len(items)} items, got shape {flat.shape}")
    results, pos = [], 0
    for item in items:
        n_c, n_r = len(item.chosen), len(item.rejected)
        chosen, rejected = flat[pos : pos + n_c], flat[pos + n_c : pos + n_c + n_r]
        pos += n_c + n_r
        credit = float(np.mean(best_of_n_credit(chosen, [rejected] * n_c)))
        pair = float(np.mean(pairwise_credit(np.repeat(chosen, n_r), np.tile(rejected, n_c))))
        results.append(ItemResult(item.id, item.subset, item.source, tuple(chosen), tuple(rejected), credit, pair))
    return results


def rewardbench2_scores(results: Sequence[ItemResult]) -> dict[str, float]:
    """RewardBench 2 subset scores (best-of-N accuracy; `ties_score` for Ties) and their unweighted mean."""
    scores: dict[str, float] = {}
    for name, acc in per_subset([r.credit for r in results], [r.subset for r in results]).items():
        scores[name] = acc.value
    ties = [r for r in results if r.subset == TIES_SUBSET]
    if ties:
        official = ties_score([r.id for r in ties], [r.chosen_scores for r in ties], [r.rejected_scores for r in ties])
        scores[TIES_SUBSET] = official.value
    return {**scores, "overall": macro_mean(scores)}
