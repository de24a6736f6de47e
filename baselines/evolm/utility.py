"""Discriminative utility: does the frozen judge, applying a rubric, rank the preferred response of a pair higher?

EvoLM's rubric reward (`rubric_reward_use_margin=False`) is 1.0 when the accepted answer's judge score exceeds
the rejected one's and 0.0 otherwise (a tie earns nothing); with the margin option it is the score difference.
We blend the two with `margin_weight`, and optionally blend in a format reward (`format_weight`), as EvoLM's
`final = (1 - w) * base + w * format`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.types import Message, Rubric


@dataclass(frozen=True)
class Pair:
    """Two responses to one prompt, `preferred` labelled better than `other`.

    `kind` is "temporal" (a current response vs the model's own older one; `new_step`/`old_step` are policy
    steps) or "rubric_conditioned" (an answer written with the rubric in context vs a question-only answer).
    `found` records how the older response was found ("window" or one of the fallbacks).
    """

    key: str
    prompt_id: str
    chat: tuple[Message, ...]
    preferred: str
    other: str
    kind: str
    new_step: int | None = None
    old_step: int | None = None
    found: str = ""

    def to_record(self) -> dict[str, Any]:
        """JSON-ready form for the run store."""
        return {
            "key": self.key,
            "prompt_id": self.prompt_id,
            "chat": list(self.chat),
            "preferred": self.preferred,
            "other": self.other,
            "kind": self.kind,
            "new_step": self.new_step,
            "old_step": self.old_step,
            "found": self.found,
        }


def ranking_reward(preferred: float, other: float, margin_weight: float = 0.0) -> float:
    """`(1 - m) * [preferred > other] + m * (preferred - other)`; NaN if either score is NaN.

    >>> ranking_reward(0.7, 0.4), ranking_reward(0.4, 0.4), round(ranking_reward(0.7, 0.4, margin_weight=1.0), 3)
    (1.0, 0.0, 0.3)
    """
    if math.isnan(preferred) or math.isnan(other):
        return math.nan
    binary = 1.0 if preferred > other else 0.0
    return (1.0 - margin_weight) * binary + margin_weight * (preferred - other)


def generator_reward(rubric: Rubric | None, utilities: Sequence[float], format_weight: float = 0.0) -> float | None:
    """A generated rubric's reward: mean utility over its pairs, blended with the format reward.

    An unparsable rubric earns 0 (the format reward is 0 and it ranks nothing). A parsed rubric whose every
    utility is NaN (the judge could not score) is unscorable: None, which TRL leaves out of the advantage.

    >>> generator_reward(None, []), generator_reward(Rubric(()), [1.0, 0.0]), generator_reward(Rubric(()), [math.nan])
    (0.0, 0.5, None)
    """
    if rubric is None:
        return 0.0
    finite = [u for u in utilities if not math.isnan(u)]
    if not finite:
        return None
    return (1.0 - format_weight) * (sum(finite) / len(finite)) + format_weight * 1.0
