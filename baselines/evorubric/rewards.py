"""EvoRubric's role prompt for the Rubric Generator and the two GRPO reward functions.

- Rubric Generator: each sampled rubric is parsed and verified against the prompt's response group; its reward
  is the share of its criteria that survive every enabled stage (0 for an unparsable sample). Survivors join
  the prompt's memory pool.
- Reasoner: the frozen judge grades each response on every pool criterion; the reward is their weighted mean
  (a dense, multi-objective reward). The same verdicts show which pool criteria were flat on the group, which
  is how the pool prunes itself.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from baselines.coevolution.history import ResponseHistory
from baselines.coevolution.roles import question_text
from baselines.coevolution.telemetry import mean, rubric_summary
from baselines.evolm.rewards import completion_text, merge_tally
from baselines.evorubric.pipeline import StageCounts, Stages, verify_group
from baselines.evorubric.pool import MemoryPool
from baselines.evorubric.verify import zero_variance
from harness.judge import AGGREGATES
from harness.rubric import ParseTally
from harness.types import Chat, Message

EXTENDER_SYSTEM = """You write grading criteria for answers to a question.

Each criterion checks one thing a good answer does (or, with a negative weight, one mistake it avoids), can be \
decided yes or no by reading an answer, and is specific to this question. Do not repeat criteria already in use.

Reply with JSON only, in this form:
[{"criterion": "States that the tablet should be taken with food", "weight": 3}, \
{"criterion": "Recommends a dose above the stated maximum", "weight": -4}]"""


def extender_chat(chat: Sequence[Message], pool: Sequence[str]) -> Chat:
    """The Rubric Generator role: the question, the criteria in the pool, and a request for new ones."""
    listed = "\n".join(f"- {t}" for t in pool) or "(none yet)"
    user = f"Question:\n{question_text(chat)}\n\nCriteria already in use:\n{listed}\n\nWrite 2 to 4 new criteria."
    return [Message(role="system", content=EXTENDER_SYSTEM), Message(role="user", content=user)]


def generator_reward_func(
    chats: Mapping[str, Chat],
    groups: Mapping[str, list[str]],
    pool: MemoryPool,
    stages: Stages,
    step: Callable[[], int],
    total: ParseTally,
    note: Callable[..., None],
) -> Callable[..., list[float | None]]:
    """Reward = validated share of each sampled rubric's criteria; validated criteria enter the pool."""

    def generator_reward(prompts: list, completions: list, prompt_id: list[str], **_: Any) -> list[float | None]:
        tally = ParseTally()
        rubrics = [tally.parse(completion_text(c), prompt_id=p) for c, p in zip(completions, prompt_id, strict=True)]
        merge_tally(total, tally)
        counts, before = StageCounts(), pool.stats()
        rewards: list[float | None] = [0.0] * len(rubrics)
        by_prompt: dict[str, list[int]] = defaultdict(list)
        for i, pid in enumerate(prompt_id):
            by_prompt[pid].append(i)
        for pid, idx in by_prompt.items():
            existing = pool.criteria(pid)
            group = [rubrics[i] for i in idx]
            validated = verify_group(stages, chats[pid], group, groups[pid], existing, counts)
            for i, kept in zip(idx, validated, strict=True):
                if rubrics[i] is not None:
                    rewards[i] = len(kept) / len(rubrics[i].criteria)
            pool.add(pid, [c for kept in validated for c in kept], step())
        after = pool.stats()
        churn = (after["added_total"] + after["evicted_total"] - before["added_total"] - before["evicted_total"]) / max(
            after["criteria"], 1
        )
        note(
            reward_mean=mean([r for r in rewards if r is not None]),
            verification=counts.as_dict(),
            pool={**after, "churn": churn},
            rubrics=rubric_summary(rubrics, tally),
        )
        return rewards

    return generator_reward


def reasoner_reward_func(
    chats: Mapping[str, Chat],
    pool: MemoryPool,
    judge: Any,
    history: ResponseHistory,
    step: Callable[[], int],
    prune_pool: bool,
    note: Callable[..., None],
) -> Callable[..., list[float | None]]:
    """Reward = weighted mean of the pool criteria's verdicts; flat pool criteria count towards eviction."""

    def reasoner_reward(prompts: list, completions: list, prompt_id: list[str], **_: Any) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        rubrics = {pid: pool.rubric(pid) for pid in set(prompt_id)}
        scored = [i for i, pid in enumerate(prompt_id) if rubrics[pid] is not None]
        items = [(chats[prompt_id[i]], texts[i], rubrics[prompt_id[i]]) for i in scored]
        verdicts = dict(zip(scored, judge.verdicts(items), strict=True))
        fn = AGGREGATES[judge.aggregate]
        rewards: list[float | None] = [None] * len(texts)
        for i, row in verdicts.items():
            score = fn(rubrics[prompt_id[i]].criteria, [v.p_yes for v in row])
            rewards[i] = None if math.isnan(score) else score
        s, before = step(), pool.stats()
        for i, (pid, text) in enumerate(zip(prompt_id, texts, strict=True)):
            history.add(pid, s, text, rewards[i])
        flat_rates = _prune(pool, prompt_id, verdicts) if prune_pool else []
        after = pool.stats()
        note(
            policy_step=s,
            reward_mean=mean([r for r in rewards if r is not None]),
            without_pool=len(texts) - len(scored),
            pool={**after, "evicted": after["evicted_total"] - before["evicted_total"]},
            pool_flat_rate=mean(flat_rates),
        )
        return rewards

    return reasoner_reward


def _prune(pool: MemoryPool, prompt_id: Sequence[str], verdicts: Mapping[int, list]) -> list[float]:
    """Tell the pool which of each prompt's criteria were flat on this step's group; returns the flat shares."""
    rates = []
    for pid in sorted(set(prompt_id)):
        rows = [verdicts[i] for i, p in enumerate(prompt_id) if p == pid and i in verdicts]
        if len(rows) < 2:
            continue
        flat = zero_variance([[row[k].p_yes for row in rows] for k in range(len(rows[0]))])
        rates.append(sum(flat) / len(flat))
        pool.observe(pid, flat)
    return rates
