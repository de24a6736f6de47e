"""EvoLM's two GRPO reward functions, in TRL's `reward_funcs` shape.

- Policy phase: the frozen judge's score of each response under the generator's rubric for its prompt; every
  response is stored in the history with the policy step that produced it (the temporal-contrast buffer).
- Generator phase: each sampled rubric is parsed and applied by the frozen judge to its prompt's pair; the
  reward is the discriminative utility (`utility.generator_reward`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from baselines.coevolution.history import ResponseHistory
from baselines.coevolution.telemetry import mean, rubric_summary
from baselines.evolm.utility import Pair, generator_reward, ranking_reward
from harness.rubric import ParseTally
from harness.types import Chat, Rubric

Note = Callable[..., None]


def completion_text(completion: Any) -> str:
    """The text of a TRL completion (a string, or conversational `[{"role": "assistant", "content": ...}]`).

    >>> completion_text([{"role": "assistant", "content": "hi"}]), completion_text("yo")
    ('hi', 'yo')
    """
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion)


def merge_tally(total: ParseTally, step: ParseTally) -> None:
    """Add one step's parse counts to a running total."""
    total.ok += step.ok
    total.failures.update(step.failures)


def policy_reward_func(
    chats: Mapping[str, Chat],
    rubrics: Mapping[str, Rubric | None],
    judge: Any,
    history: ResponseHistory,
    policy_step: Callable[[], int],
    note: Note,
) -> Callable[..., list[float | None]]:
    """Reward = judge score under the prompt's rubric; None where the prompt has no rubric or the judge fails."""

    def policy_reward(prompts: list, completions: list, prompt_id: list[str], **_: Any) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        scored = [i for i, pid in enumerate(prompt_id) if rubrics.get(pid) is not None]
        items = [(chats[prompt_id[i]], texts[i], rubrics[prompt_id[i]]) for i in scored]
        scores = dict(zip(scored, judge.score(items), strict=True))
        step = policy_step()
        rewards: list[float | None] = []
        for i, (pid, text) in enumerate(zip(prompt_id, texts, strict=True)):
            score = scores.get(i, math.nan)
            reward = None if math.isnan(score) else float(score)
            history.add(pid, step, text, reward)
            rewards.append(reward)
        note(
            policy_step=step,
            reward_mean=mean([r for r in rewards if r is not None]),
            without_rubric=len(texts) - len(scored),
            unscored=sum(r is None for r in rewards),
        )
        return rewards

    return policy_reward


def generator_reward_func(
    pairs: Mapping[str, Pair],
    judge: Any,
    total: ParseTally,
    margin_weight: float,
    format_weight: float,
    note: Note,
    keep: Callable[[dict[str, Any]], None] = lambda record: None,
) -> Callable[..., list[float | None]]:
    """Reward = discriminative utility of each sampled rubric on its prompt's pair (see `utility`).

    `keep` receives one record per sample (pair key, text, utility, reward), for the run store.
    """

    def generator_reward_fn(prompts: list, completions: list, pair_key: list[str], **_: Any) -> list[float | None]:
        tally = ParseTally()
        rubrics = [
            tally.parse(completion_text(c), prompt_id=pairs[k].prompt_id, source="generator")
            for c, k in zip(completions, pair_key, strict=True)
        ]
        merge_tally(total, tally)
        utilities = _pair_utilities(rubrics, [pairs[k] for k in pair_key], judge, margin_weight)
        rewards = [generator_reward(r, [u], format_weight) for r, u in zip(rubrics, utilities, strict=True)]
        for k, c, u, r in zip(pair_key, completions, utilities, rewards, strict=True):
            keep({"pair_key": k, "text": completion_text(c), "utility": u, "reward": r})
        note(
            reward_mean=mean([r for r in rewards if r is not None]),
            train_pair_utility=mean(utilities),
            pair_kinds=sorted({pairs[k].kind for k in pair_key}),
            rubrics=rubric_summary(rubrics, tally),
        )
        return rewards

    return generator_reward_fn


def _pair_utilities(
    rubrics: Sequence[Rubric | None], pairs: Sequence[Pair], judge: Any, margin_weight: float
) -> list[float]:
    """Ranking reward of each parsed rubric on its pair (NaN for unparsed rubrics), with one judge call."""
    parsed = [i for i, r in enumerate(rubrics) if r is not None]
    items = []
    for i in parsed:
        chat = list(pairs[i].chat)
        items += [(chat, pairs[i].preferred, rubrics[i]), (chat, pairs[i].other, rubrics[i])]
    scores = judge.score(items)
    utilities = [math.nan] * len(rubrics)
    for n, i in enumerate(parsed):
        utilities[i] = ranking_reward(scores[2 * n], scores[2 * n + 1], margin_weight)
    return utilities
