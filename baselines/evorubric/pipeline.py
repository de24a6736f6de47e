"""One prompt's pass through the three verification stages, with per-stage counts for telemetry.

Input: the group of rubrics the generator sampled for a prompt, and a group of Reasoner responses to it.
Output: the criteria of each sampled rubric that survived every enabled stage. The frozen judge grades all
surviving candidates and the pool criteria on the responses in one call per response (shared prefix).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from baselines.coevolution.roles import question_text
from baselines.evorubric.verify import LooInput, MetaVerifier, loo_consensus, zero_variance
from harness.types import Chat, Criterion, Rubric


@dataclass
class StageCounts:
    """How many candidate criteria each stage saw and removed."""

    sampled: int = 0
    parse_failed: int = 0
    proposed: int = 0
    meta_rejected: Counter = field(default_factory=Counter)
    meta_rejected_total: int = 0
    zv_checked: int = 0
    zv_pruned: int = 0
    loo_checked: int = 0
    loo_accepted: int = 0
    loo_rejected: int = 0
    loo_abstained: int = 0
    validated: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts and the rates the telemetry reports."""
        rates = {
            "zero_variance_rate": self.zv_pruned / self.zv_checked if self.zv_checked else None,
            "loo_consensus_rate": self.loo_accepted / self.loo_checked if self.loo_checked else None,
            "meta_rejection_rate": self.meta_rejected_total / self.proposed if self.proposed else None,
            "validated_rate": self.validated / self.proposed if self.proposed else None,
        }
        counts = {k: v for k, v in vars(self).items() if k != "meta_rejected"}
        return {**counts, "meta_rejected": dict(self.meta_rejected), **rates}


@dataclass
class Stages:
    """Which stages run, and the models behind them."""

    judge: Any
    meta: MetaVerifier | None
    zero_variance: bool
    loo: bool


def grade(judge: Any, chat: Chat, responses: Sequence[str], criteria: Sequence[Criterion]) -> dict[str, list]:
    """P(yes) of every criterion on every response: `{criterion text: [p per response]}`."""
    unique = list({c.text: c for c in criteria}.values())
    if not unique:
        return {}
    rubric = Rubric(tuple(Criterion(c.text) for c in unique))
    rows = judge.verdicts([(chat, r, rubric) for r in responses])
    return {c.text: [row[k].p_yes for row in rows] for k, c in enumerate(unique)}


def verify_group(
    stages: Stages,
    chat: Chat,
    rubrics: Sequence[Rubric | None],
    responses: Sequence[str],
    pool: Sequence[Criterion],
    counts: StageCounts,
) -> list[list[Criterion]]:
    """The validated criteria of each sampled rubric (an empty list for unparsed ones)."""
    candidates = [list(r.criteria) if r is not None else [] for r in rubrics]
    counts.sampled += len(rubrics)
    counts.parse_failed += sum(r is None for r in rubrics)
    counts.proposed += sum(map(len, candidates))
    if stages.meta is not None:
        candidates = _meta_stage(stages.meta, chat, candidates, pool, counts)
    if stages.zero_variance or stages.loo:
        verdicts = grade(stages.judge, chat, responses, [c for cs in candidates for c in cs] + list(pool))
        if stages.zero_variance:
            candidates = _zero_variance_stage(candidates, verdicts, counts)
        if stages.loo:
            candidates = _loo_stage(candidates, verdicts, len(responses), pool, counts)
    counts.validated += sum(map(len, candidates))
    return candidates


def _meta_stage(
    meta: MetaVerifier, chat: Chat, candidates: list[list[Criterion]], pool: Sequence[Criterion], counts: StageCounts
) -> list[list[Criterion]]:
    flat = [c for cs in candidates for c in cs]
    flags = iter(meta.check(question_text(chat), [c.text for c in pool], [c.text for c in flat]))
    kept = []
    for cs in candidates:
        keep = []
        for c in cs:
            defects = next(flags)
            counts.meta_rejected.update(defects)
            counts.meta_rejected_total += bool(defects)
            if not defects:
                keep.append(c)
        kept.append(keep)
    return kept


def _zero_variance_stage(
    candidates: list[list[Criterion]], verdicts: dict[str, list], counts: StageCounts
) -> list[list[Criterion]]:
    kept = []
    for cs in candidates:
        flat = zero_variance([verdicts[c.text] for c in cs])
        counts.zv_checked += len(cs)
        counts.zv_pruned += sum(flat)
        kept.append([c for c, f in zip(cs, flat, strict=True) if not f])
    return kept


def _loo_stage(
    candidates: list[list[Criterion]],
    verdicts: dict[str, list],
    n: int,
    pool: Sequence[Criterion],
    counts: StageCounts,
) -> list[list[Criterion]]:
    decisions = loo_consensus(LooInput(candidates, verdicts, n, list(pool)))
    kept = []
    for cs, ds in zip(candidates, decisions, strict=True):
        counts.loo_checked += sum(d.decision != "abstain" for d in ds)
        counts.loo_accepted += sum(d.decision == "accept" for d in ds)
        counts.loo_rejected += sum(d.decision == "reject" for d in ds)
        counts.loo_abstained += sum(d.decision == "abstain" for d in ds)
        kept.append([c for c, d in zip(cs, ds, strict=True) if d.decision != "reject"])
    return kept
