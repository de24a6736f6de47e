"""Where co-evolution gets its prompts and its held-out preference pairs.

A run trains on `Prompt`s (a chat, optionally a verifiable answer and an expert rubric) and tracks the rubric
generator's discriminative utility on held-out `PreferenceItem`s. Sources:
- `FitContext.train_items`: prompts of the train part; a hashed 20% of the items is held out for utility.
- `math`: `tasks.math_verified` problems (train split) with their answers, so the label-noise audit can check
  "newer is better" against correctness. Held-out pairs: a correct and a wrong final answer to other problems.
- `healthbench`: HealthBench prompts of the train fold (shortest first) with their physician rubric, and
  ideal-vs-reference held-out items.
- explicit chats (`PolicyContext.prompts`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from harness.cache import content_key
from harness.splits import fold
from harness.types import Chat, Message, PreferenceItem, Rubric

HELDOUT_SALT = "coevolution-heldout-v1"
MATH_USER = "{q}\nGive the final answer at the end."


@dataclass(frozen=True)
class Prompt:
    """A training prompt for co-evolution."""

    id: str
    chat: tuple[Message, ...]
    answer: str | None = None
    expert_rubric: Rubric | None = None


def chat_id(chat: Sequence[Message]) -> str:
    """A stable id for a chat: a prefix of its content hash."""
    return "chat-" + content_key("prompt", chat=list(chat))[:16]


def prompts_from_chats(chats: Sequence[Sequence[Message]]) -> list[Prompt]:
    """Prompts for explicit chats, de-duplicated, in order."""
    seen: dict[str, Prompt] = {}
    for chat in chats:
        prompt = Prompt(chat_id(chat), tuple(Message(role=m["role"], content=m["content"]) for m in chat))
        seen.setdefault(prompt.id, prompt)
    return list(seen.values())


def split_items(items: Sequence[PreferenceItem], heldout_fraction: float = 0.2) -> tuple[list[Prompt], list]:
    """Training prompts from most items and held-out items from a hashed `heldout_fraction` of them."""
    # `fold` puts `heldout_fraction` of the keys in its "train" bucket; here that bucket is the held-out part.
    held = {it.id for it in items if fold(it.id, heldout_fraction, HELDOUT_SALT) == "train"}
    heldout = [it for it in items if it.id in held]
    train = [it for it in items if it.id not in held]
    return prompts_from_chats([it.prompt for it in train]), heldout


def math_prompts(n: int, seed: int = 0) -> list[Prompt]:
    """`n` math-verified problems of the train split, with answers (needs `tasks.math_verified`)."""
    from tasks.math_verified import make_problems

    return [
        Prompt(p.id, (Message(role="user", content=MATH_USER.format(q=p.question)),), answer=p.answer)
        for p in make_problems(n, seed=seed, split="train")
    ]


def wrong_answer(answer: str) -> str:
    """A plausible but wrong final answer: the number plus one (a fraction plus one half), else a negation.

    >>> wrong_answer("12"), wrong_answer("3/4"), wrong_answer("x+1")
    ('13', '5/4', 'not x+1')
    """
    try:
        value = Fraction(answer.strip())
    except (ValueError, ZeroDivisionError):
        return f"not {answer.strip()}"
    shifted = value + (1 if value.denominator == 1 else Fraction(1, 2))
    return str(shifted)


def math_heldout_items(n: int, seed: int = 0) -> list[PreferenceItem]:
    """Held-out pairs on math problems: the worked solution beats the same solution with a wrong final answer."""
    from tasks.math_verified import make_problems, worked_solution

    # Another draw than the training prompts'; the caller drops any problem that is also a training prompt.
    problems = make_problems(n, seed=seed + 10_007, split="train")
    items = []
    for p in problems:
        good = worked_solution(p)
        bad = good.replace(f"\\boxed{{{p.answer}}}", f"\\boxed{{{wrong_answer(p.answer)}}}")
        chat = (Message(role="user", content=MATH_USER.format(q=p.question)),)
        items.append(PreferenceItem(f"heldout/{p.id}", chat, (good,), (bad,), p.family, "math-verified-worked"))
    return items


@functools.cache
def healthbench_records() -> tuple[Any, ...]:
    """HealthBench, loaded once per process (several sources and the expert seeding read it)."""
    from harness.data import load_healthbench

    return tuple(load_healthbench())


def healthbench_prompts(n: int, max_chars: int = 600) -> list[Prompt]:
    """The `n` shortest HealthBench prompts of the train fold, with their physician rubrics."""
    records = [r for r in healthbench_records() if fold(r.prompt_id) == "train"]
    records = [r for r in records if sum(len(m["content"]) for m in r.chat) <= max_chars]
    records.sort(key=lambda r: (sum(len(m["content"]) for m in r.chat), r.prompt_id))
    return [Prompt(r.prompt_id, r.chat, expert_rubric=r.rubric) for r in records[:n]]


def healthbench_heldout_items(n: int) -> list[PreferenceItem]:
    """`n` HealthBench ideal-vs-reference items of the train fold (shortest responses first)."""
    from harness.data import healthbench_ideal_items

    items = [it for it in healthbench_ideal_items(healthbench_records()) if fold(it.id.split("/", 1)[1]) == "train"]
    items.sort(key=lambda it: (len(it.chosen[0]) + sum(map(len, it.rejected)), it.id))
    return items[:n]


def drop_overlap(prompts: Sequence[Prompt], items: Sequence[PreferenceItem]) -> list[PreferenceItem]:
    """Held-out items whose prompt is not a training prompt (so utility is measured on unseen prompts)."""
    seen = {chat_id(p.chat) for p in prompts}
    return [it for it in items if chat_id(it.prompt) not in seen]


def as_chats(prompts: Sequence[Prompt]) -> list[Chat]:
    """The chats of prompts, as mutable lists."""
    return [list(p.chat) for p in prompts]
