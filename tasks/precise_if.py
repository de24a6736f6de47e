"""`precise-if`: IFEval and IFBench prompts, the embedded model's own samples, verified by the official checkers.

Like RewardBench 2's Precise IF subset, each item has one response that follows every instruction (strict test)
and three that fail even the loose test; responses that pass only the loose test are ambiguous and left out.
Prompts that do not yield that shape are skipped and counted by reason in the build stats (`harness benchmarks
--build precise-if`). Prompts alternate between IFEval and IFBench, so a limited build has both subsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, zip_longest

from harness.backends import Backend
from harness.bench.static import Built, benchmark
from harness.types import GenerationParams, PreferenceItem, user_chat
from tasks.if_checkers import IFPrompt, Unverifiable, check_response, load_if_prompts
from tasks.sampling import build_items, chat_tuple, default_backend, pick_best_of_4

SOURCES = ("ifeval", "ifbench")


def interleaved_prompts(sources: Sequence[str] = SOURCES) -> list[IFPrompt]:
    """All prompts of the given sources, alternating between them (round robin, in file order)."""
    lists = [load_if_prompts(s) for s in sources]
    return [p for p in chain.from_iterable(zip_longest(*lists)) if p is not None]


def verify(prompt: IFPrompt, responses: Sequence[str]) -> list[tuple[str, str]]:
    """(response, verdict) for each response; raises Unverifiable when the prompt's checkers cannot run."""
    return [(r, check_response(prompt, r)) for r in responses]


def prompt_to_item(prompt: IFPrompt, responses: Sequence[str], model: str) -> PreferenceItem | str:
    """The best-of-4 item of one prompt's samples, or the reason it yields none."""
    try:
        picked = pick_best_of_4(verify(prompt, responses))
    except Unverifiable as exc:
        return f"unverifiable offline: {str(exc).split(': ', 1)[-1]}"
    if isinstance(picked, str):
        return picked
    chosen, rejected = picked
    chat = chat_tuple(user_chat(prompt.prompt))
    source = f"precise-if:{model}-samples"
    return PreferenceItem(f"precise-if/{prompt.id}", chat, (chosen,), tuple(rejected), prompt.source, source)


def build_precise_if(
    backend: Backend,
    model: str,
    limit: int | None = None,
    n_samples: int = 8,
    params: GenerationParams | None = None,
    sources: Sequence[str] = SOURCES,
) -> Built:
    """Sample, verify and assemble precise-if items from `backend` (the model named `model` in item sources)."""
    params = params or GenerationParams(max_new_tokens=256, temperature=0.8, top_p=0.95)

    def to_items(batch: list[IFPrompt], samples: list[list[str]]) -> list[PreferenceItem | str]:
        return [prompt_to_item(p, s, model) for p, s in zip(batch, samples, strict=True)]

    prompts = interleaved_prompts(sources)
    items, stats = build_items(
        prompts, to_items, lambda p: user_chat(p.prompt), backend, n_samples, params, limit, desc="precise-if"
    )
    return Built(items, {**stats, "model": model, "sources": list(sources), "prompts_available": len(prompts)})


@benchmark(
    "precise-if",
    "IFEval + IFBench prompts; 1 verified-correct vs 3 verified-incorrect samples of the embedded model",
    cached=True,
)
def precise_if(
    limit: int | None = None,
    model: str = "smollm2-135m",
    n_samples: int = 8,
    max_new_tokens: int = 256,
    temperature: float = 0.8,
    seed: int = 0,
    sources: Sequence[str] = SOURCES,
) -> Built:
    """Build precise-if with the embedded model (samples cached; the build itself is cached by the registry)."""
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=0.95, seed=seed)
    return build_precise_if(default_backend(model), model, limit, n_samples, params, sources)
