"""Shared machinery for benchmarks built from a model's own samples: seeded sampling and the best-of-4 item rule.

Every sample is cached by content hash (`CachedBackend`), and each of a prompt's N samples uses its own seed, so
a build that is stopped and started again, or built with a larger limit, samples nothing twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from tqdm.auto import tqdm

from harness.backends import Backend
from harness.types import Chat, GenerationParams, Message, PreferenceItem

T = TypeVar("T")
N_REJECTED = 3  # RewardBench 2 shape: one correct response against three incorrect ones


def default_backend(model: str) -> Backend:
    """`model` (a catalog name, or a backend spec such as `vllm:NAME` on a GPU machine) behind the sample cache."""
    from harness.backends import make_backend
    from harness.cache import CachedBackend

    return CachedBackend(make_backend(model if ":" in model else f"hf:{model}"))


def sample_responses(backend: Backend, chats: Sequence[Chat], n: int, params: GenerationParams) -> list[list[str]]:
    """`n` samples per chat; sample k uses seed `params.seed + k`, so samples are reproducible one by one."""
    per_seed = [backend.generate(list(chats), replace(params, seed=params.seed + k)) for k in range(n)]
    return [list(samples) for samples in zip(*per_seed, strict=True)]


def pick_best_of_4(verdicts: Sequence[tuple[str, str]]) -> tuple[str, list[str]] | str:
    """From (response, verdict) pairs choose the first correct and first three incorrect distinct responses.

    Returns (chosen, rejected), or the reason the prompt yields no item. Empty and repeated responses are left
    out: an empty response is trivially wrong and two identical responses can only tie.

    >>> wrong = [("b", "incorrect"), ("b", "incorrect"), ("", "incorrect"), ("c", "incorrect"), ("d", "incorrect")]
    >>> pick_best_of_4([("a", "correct"), *wrong])
    ('a', ['b', 'c', 'd'])
    >>> pick_best_of_4([("a", "incorrect")] * 4)
    'no correct response'
    """
    seen: set[str] = set()
    correct, incorrect = [], []
    for response, verdict in verdicts:
        if not response.strip() or response in seen:
            continue
        seen.add(response)
        (correct if verdict == "correct" else incorrect if verdict == "incorrect" else []).append(response)
    if not correct:
        return "no correct response"
    if len(incorrect) < N_REJECTED:
        return f"fewer than {N_REJECTED} incorrect responses"
    return correct[0], incorrect[:N_REJECTED]


def build_items(
    prompts: Sequence[T],
    to_item: Callable[[list[T], list[list[str]]], list[PreferenceItem | str]],
    chat_of: Callable[[T], Chat],
    backend: Backend,
    n_samples: int,
    params: GenerationParams,
    limit: int | None = None,
    chunk: int = 16,
    desc: str = "building",
) -> tuple[list[PreferenceItem], dict[str, Any]]:
    """Sample `n_samples` responses per prompt a chunk at a time and turn each prompt into an item or a reason.

    Stops once `limit` items exist. Returns the items and stats: prompts used, items, and skips by reason.
    """
    items: list[PreferenceItem] = []
    skipped: Counter[str] = Counter()
    used = 0
    chunk = min(chunk, limit) if limit is not None else chunk  # a small limit should not sample a whole chunk
    # Progress counts prompts (the unit of work); the item count so far is shown beside it.
    with tqdm(total=len(prompts), desc=desc, unit="prompt") as bar:
        for start in range(0, len(prompts), chunk):
            if limit is not None and len(items) >= limit:
                break
            batch = list(prompts[start : start + chunk])
            samples = sample_responses(backend, [chat_of(p) for p in batch], n_samples, params)
            for outcome in to_item(batch, samples):
                used += 1
                if isinstance(outcome, PreferenceItem):
                    items.append(outcome)
                else:
                    skipped[outcome] += 1
            bar.update(len(batch))
            bar.set_postfix(items=len(items), skipped=sum(skipped.values()))
    # The last chunk may yield more items than the limit; they are counted, then dropped.
    stats = {"prompts_used": used, "items_built": len(items), "skipped": dict(skipped.most_common())}
    items = items[:limit]
    stats["items"] = len(items)
    return items, {**stats, "generation": params.to_dict(), "n_samples": n_samples}


def chat_tuple(chat: Chat) -> tuple[Message, ...]:
    """A chat as the immutable tuple PreferenceItem stores."""
    return tuple(chat)
