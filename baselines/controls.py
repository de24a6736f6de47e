"""Control reward methods: response length and a seeded random score.

They anchor every comparison: a method that does not beat `random` has learned nothing, and one that tracks
`length` may be rewarding verbosity.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from harness.methods import FitContext, reward_method
from harness.types import Chat


@dataclass
class LengthReward:
    """Reward = number of whitespace-separated words in the response."""

    name: str = "length"

    def fit(self, ctx: FitContext) -> None:
        """Nothing to train."""

    def score(self, prompts: Sequence[Chat], responses: Sequence[str]) -> list[float]:
        """Count words per response."""
        return [float(len(r.split())) for r in responses]


@dataclass
class RandomReward:
    """Reward = a uniform [0, 1) number derived from a hash of (seed, prompt, response).

    Derived from a hash rather than drawn from a stream so that the same pair always gets the same score,
    whatever the batch order; identical responses therefore tie, as they should.
    """

    seed: int = 0
    name: str = "random"

    def fit(self, ctx: FitContext) -> None:
        """Nothing to train."""

    def score(self, prompts: Sequence[Chat], responses: Sequence[str]) -> list[float]:
        """Hash each pair to a number in [0, 1)."""
        out = []
        for prompt, response in zip(prompts, responses, strict=True):
            blob = json.dumps([self.seed, prompt, response], sort_keys=True).encode()
            out.append(int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") / 2**64)
        return out


@reward_method("length", kind="control")
def length() -> LengthReward:
    """Response length in words (verbosity control)."""
    return LengthReward()


@reward_method("random", kind="control")
def random_reward(seed: int = 0) -> RandomReward:
    """Seeded random score per (prompt, response) (chance control)."""
    return RandomReward(seed=seed)
