"""Plain records shared by every part of the harness."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict


class Message(TypedDict):
    """One chat turn, in the shape chat templates, TRL and OpenAI servers all use."""

    role: str
    content: str


Chat = list[Message]


def user_chat(text: str) -> Chat:
    """Wrap a single user message as a chat.

    >>> user_chat("hi")
    [{'role': 'user', 'content': 'hi'}]
    """
    return [Message(role="user", content=text)]


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings; part of every generation's cache key.

    `temperature == 0` means greedy decoding. `seed` makes sampling reproducible per chat, independent
    of how chats are batched together.
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"GenerationParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"GenerationParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"GenerationParams.top_p must be in (0, 1], got {self.top_p}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (used in cache keys and manifests)."""
        return {**asdict(self), "stop": list(self.stop)}


@dataclass(frozen=True)
class PreferenceItem:
    """A preference item: one or more chosen responses that beat one or more rejected ones."""

    id: str
    prompt: tuple[Message, ...]
    chosen: tuple[str, ...]
    rejected: tuple[str, ...]
    subset: str = "default"
    source: str = ""

    def __post_init__(self) -> None:
        if not self.chosen:
            raise ValueError(f"PreferenceItem {self.id!r}: field 'chosen' is empty")
        if not self.rejected:
            raise ValueError(f"PreferenceItem {self.id!r}: field 'rejected' is empty")


@dataclass(frozen=True)
class Criterion:
    """One checkable rubric criterion; a negative weight marks a penalty."""

    text: str
    weight: float = 1.0
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rubric:
    """The weighted criteria that define a good response to one prompt."""

    criteria: tuple[Criterion, ...]
    source: str = ""
    prompt_id: str = ""


@dataclass(frozen=True)
class Verdict:
    """A judge's answer for one criterion: P(yes), or None when the judge could not score it."""

    criterion: Criterion
    p_yes: float | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
