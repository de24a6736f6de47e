"""Backends: where text gets generated and scored. One small Protocol, three implementations.

- `hf`: transformers on CPU or GPU (`harness.backends.hf`).
- `vllm`: vLLM on GPU, imported only when asked for (`harness.backends.vllm`).
- `openai`: any OpenAI-compatible chat-completions server over HTTP (`harness.backends.openai`).

`make_backend("hf:smollm2-135m")` builds one from a spec string `KIND:MODEL`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from harness.types import Chat, GenerationParams


@runtime_checkable
class Backend(Protocol):
    """Generates and scores text for chats.

    `model_id` names the model and its settings; it is part of every cache key, so two backends with the
    same `model_id` must give the same outputs for the same inputs.
    """

    model_id: str

    def generate(self, chats: Sequence[Chat], params: GenerationParams) -> list[str]:
        """Return one assistant reply per chat, batched, sampled reproducibly from `params.seed`."""
        ...

    def logprobs(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        """Return log P(continuation | chat) with the continuation as the assistant's reply, summed over tokens."""
        ...


def make_backend(spec: str, **options: Any) -> Backend:
    """Build a backend from `KIND:MODEL`, e.g. `hf:smollm2-135m`, `vllm:/models/x`, `openai:gpt-4o-mini`.

    A bare model name means `hf:`. Options go to the backend's constructor.
    """
    kind, sep, model = spec.partition(":")
    if not sep:
        kind, model = "hf", spec
    if kind == "hf":
        from harness.backends.hf import HFBackend

        return HFBackend(model, **options)
    if kind == "vllm":
        from harness.backends.vllm import VLLMBackend

        return VLLMBackend(model, **options)
    if kind == "openai":
        from harness.backends.openai import OpenAIBackend

        return OpenAIBackend(model, **options)
    raise ValueError(f"unknown backend kind {kind!r} in {spec!r}; expected hf, vllm or openai")
