"""EvoRubric's three verification levels for newly generated criteria; each can be switched off.

1. Meta-verifier: a model answers, for each new criterion, whether it has one of six defects (factual conflict,
   unmeasurable, semantic duplication, trivial/cliché, length hallucination, style hallucination). The paper
   has the trained policy itself verify; `MetaVerifier` takes any judge-like object (`verdicts(items)`), so the
   frozen judge or a scripted fake works too. Exact duplicates (after case and space folding) of pool criteria
   are rejected as semantic duplicates without asking the model.
2. Zero-variance pruning: a criterion whose verdicts are identical across a prompt's group of responses cannot
   rank them and is dropped.
3. Leave-one-out peer consensus: a criterion from sampled rubric i is kept when the order it puts the group's
   responses in agrees, on a majority of the comparable response pairs, with the consensus of the other
   rubrics of the group (and the prompt's memory pool), which excludes rubric i itself.

The paper's method section was not available to us; stages 2 and 3 are our reading of its one-line
descriptions, with thresholds as parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.judge import weighted_mean_score
from harness.types import Criterion, Message, Rubric

# Defect questions asked about each new criterion; "Yes" means the defect is present.
CATEGORIES: dict[str, str] = {
    "factual_conflict": "The proposed criterion contradicts the question or states something factually wrong.",
    "unmeasurable": "The proposed criterion is too vague or subjective to decide yes or no from an answer.",
    "semantic_duplicate": "The proposed criterion means the same as one of the criteria already in use.",
    "trivial": "The proposed criterion is trivial or a cliché that almost any answer meets, such as being relevant.",
    "length_hallucination": "The proposed criterion demands a length or word count that the question does not ask for.",
    "style_hallucination": "The proposed criterion demands a style, tone or format that the question does not ask for.",
}
META_RUBRIC = Rubric(tuple(Criterion(text) for text in CATEGORIES.values()), source="evorubric-meta-verifier")


def normalise_text(text: str) -> str:
    """Case- and space-folded text for exact-duplicate checks.

    >>> normalise_text("  Gives  the DOSE. ")
    'gives the dose'
    """
    return " ".join(text.casefold().split()).rstrip(".!;:,")


def meta_conversation(question: str, pool: Sequence[str]) -> list[Message]:
    """The meta-verifier's conversation: the question and the criteria already in the pool."""
    listed = "\n".join(f"- {t}" for t in pool) or "(none)"
    return [Message(role="user", content=f"Question:\n{question}\n\nCriteria already in use:\n{listed}")]


@dataclass
class MetaVerifier:
    """Stage 1: rejects a criterion when any defect's P(yes) exceeds `threshold`."""

    judge: Any
    threshold: float = 0.5

    def check(self, question: str, pool: Sequence[str], candidates: Sequence[str]) -> list[list[str]]:
        """The defects found in each candidate (an empty list means it passed).

        Candidates from different sampled rubrics are checked independently: only the pool counts as "already
        in use", so a rubric is never penalised for what a sibling sample proposed.
        """
        in_pool = {normalise_text(t) for t in pool}
        flags: list[list[str]] = [["semantic_duplicate"] if normalise_text(t) in in_pool else [] for t in candidates]
        asked = [i for i, f in enumerate(flags) if not f]
        conversation = meta_conversation(question, pool)
        items = [(conversation, f"Proposed criterion: {candidates[i]}", META_RUBRIC) for i in asked]
        for i, verdicts in zip(asked, self.judge.verdicts(items) if items else [], strict=True):
            flags[i] = [
                name
                for name, v in zip(CATEGORIES, verdicts, strict=True)
                if v.p_yes is not None and v.p_yes > self.threshold
            ]
        return flags


def zero_variance(verdicts: Sequence[Sequence[float | None]], cut: float = 0.5) -> list[bool]:
    """Stage 2: per criterion (row of P(yes) over the group's responses), whether its verdicts are all the same.

    Verdicts are binarised at `cut`; unscored ones are ignored, and a row with fewer than two scored verdicts
    shows no variance either.

    >>> zero_variance([[0.9, 0.8, 0.7], [0.9, 0.1, 0.7], [0.2, None, None]])
    [True, False, True]
    """
    flat = []
    for row in verdicts:
        scored = [p >= cut for p in row if p is not None and not math.isnan(p)]
        flat.append(len(scored) < 2 or len(set(scored)) == 1)
    return flat


def goodness(criterion: Criterion, p_yes: float | None) -> float | None:
    """How good a verdict is for the response: P(yes) for a positive criterion, 1 - P(yes) for a penalty."""
    if p_yes is None or math.isnan(p_yes):
        return None
    return p_yes if criterion.weight >= 0 else 1.0 - p_yes


@dataclass
class Consensus:
    """Stage 3 verdict for one criterion: "accept", "reject" or "abstain" (no comparable response pair)."""

    decision: str
    agree: int = 0
    disagree: int = 0


def rubric_scores(criteria: Sequence[Criterion], verdicts: dict[str, list[float | None]], n: int) -> list[float]:
    """Weighted-mean score of a set of criteria on each of `n` responses (unscored verdicts skipped)."""
    return [
        weighted_mean_score(criteria, [verdicts[c.text][r] for c in criteria], skip_unscored=True) for r in range(n)
    ]


def concordance(criterion: Criterion, row: Sequence[float | None], consensus: Sequence[float], eps: float) -> Consensus:
    """Agreement of a criterion's binarised verdicts with a consensus score over response pairs."""
    good = [goodness(criterion, p) for p in row]
    agree = disagree = 0
    for a in range(len(row)):
        for b in range(a + 1, len(row)):
            ga, gb, ca, cb = good[a], good[b], consensus[a], consensus[b]
            if ga is None or gb is None or math.isnan(ca) or math.isnan(cb):
                continue
            da, dc = (ga >= 0.5) - (gb >= 0.5), ca - cb
            if da == 0 or abs(dc) <= eps:
                continue
            agree += (da > 0) == (dc > 0)
            disagree += (da > 0) != (dc > 0)
    if agree + disagree == 0:
        return Consensus("abstain")
    return Consensus("accept" if agree > disagree else "reject", agree, disagree)


@dataclass
class LooInput:
    """The sampled rubrics of one prompt's group, their criteria's verdicts on the responses, and the pool."""

    rubrics: list[list[Criterion]]
    verdicts: dict[str, list[float | None]]
    n_responses: int
    pool: list[Criterion] = field(default_factory=list)


def loo_consensus(data: LooInput, eps: float = 1e-6) -> list[list[Consensus]]:
    """Stage 3 for every criterion of every rubric, against the mean score of the *other* rubrics and the pool."""
    scores = [rubric_scores(r, data.verdicts, data.n_responses) if r else None for r in data.rubrics]
    pool_scores = rubric_scores(data.pool, data.verdicts, data.n_responses) if data.pool else None
    out = []
    for i, rubric in enumerate(data.rubrics):
        peers = [s for j, s in enumerate(scores) if j != i and s is not None]
        peers += [pool_scores] if pool_scores is not None else []
        consensus = [_nanmean([p[r] for p in peers]) for r in range(data.n_responses)]
        out.append([concordance(c, data.verdicts[c.text], consensus, eps) for c in rubric])
    return out


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan
