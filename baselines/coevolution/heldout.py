"""Discriminative utility on held-out preference items: does the judge, under a rubric, prefer the chosen response?"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from baselines.coevolution.telemetry import rubric_summary
from harness.rubric import ParseTally
from harness.types import PreferenceItem, Rubric

# The fields of an evaluation record that run summaries repeat.
EVAL_KEYS = ("utility", "utility_all_pairs", "rubrics")


def preference_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> dict[str, float]:
    """Utility over (chosen, rejected) score pairs: strict wins (EvoLM's reward), wins with ties as half.

    >>> preference_accuracy([0.9, 0.5, math.nan], [0.1, 0.5, 0.3])
    {'n': 3, 'scored': 2, 'utility': 0.5, 'accuracy_ties_half': 0.75, 'ties': 1}
    """
    scored = [(c, r) for c, r in zip(chosen, rejected, strict=True) if not (math.isnan(c) or math.isnan(r))]
    wins = sum(c > r for c, r in scored)
    ties = sum(c == r for c, r in scored)
    n = len(scored)
    return {
        "n": len(chosen),
        "scored": n,
        "utility": wins / n if n else math.nan,
        "accuracy_ties_half": (wins + 0.5 * ties) / n if n else math.nan,
        "ties": ties,
    }


def heldout_record(
    judge: Any, items: Sequence[PreferenceItem], rubrics: Sequence[Rubric | None], tally: ParseTally
) -> dict[str, Any]:
    """Utility of one rubric per item over every (chosen, rejected) pair, plus the rubrics' statistics.

    A rubric that did not parse ranks nothing: `utility` is over the scored pairs, `utility_all_pairs` counts
    the pairs of missing rubrics (and unscored pairs) as not won.
    """
    triples = [
        (list(it.prompt), chosen, rejected, rubric)
        for it, rubric in zip(items, rubrics, strict=True)
        if rubric is not None
        for chosen in it.chosen
        for rejected in it.rejected
    ]
    judged = [(chat, c, rubric) for chat, c, _, rubric in triples] + [
        (chat, r, rubric) for chat, _, r, rubric in triples
    ]
    scores = judge.score(judged)
    n = len(triples)
    accuracy = preference_accuracy(scores[:n], scores[n:])
    n_pairs = sum(len(it.chosen) * len(it.rejected) for it in items)
    wins = sum(c > r for c, r in zip(scores[:n], scores[n:], strict=True))
    return {
        **accuracy,
        "utility_all_pairs": wins / n_pairs if n_pairs else math.nan,
        "pairs": n_pairs,
        "rubrics": rubric_summary(rubrics, tally),
    }
