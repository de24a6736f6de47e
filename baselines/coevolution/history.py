"""Every policy response with the policy step that produced it, kept in the run store, and age-window sampling.

EvoLM's temporal contrast pairs a current response with the model's own response to the same prompt from
`[a, b]` policy steps earlier (its replay buffer's `min_age`/`max_age`, measured from the latest policy step).
The history is an append-only JSONL (`harness.store.ResultLog`), so a killed run keeps what it had.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness.store import ResultLog


@dataclass(frozen=True)
class Entry:
    """One stored policy response."""

    prompt_id: str
    step: int
    response: str
    reward: float | None = None


@dataclass(frozen=True)
class AgeWindow:
    """Ages (in policy steps before the latest one) a past response may have to be paired: `low <= age <= high`."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if self.low < 0 or self.high < self.low:
            raise ValueError(f"age window must satisfy 0 <= low <= high, got [{self.low}, {self.high}]")

    def contains(self, age: int) -> bool:
        """Whether a response of this age lies in the window."""
        return self.low <= age <= self.high

    def label(self) -> str:
        """Short name for reports, e.g. `1-3`."""
        return f"{self.low}-{self.high}"


class ResponseHistory:
    """Policy responses by prompt, persisted to `path` (one JSON line per response)."""

    def __init__(self, path: Path) -> None:
        self.log = ResultLog(path)
        self._by_prompt: dict[str, list[Entry]] = defaultdict(list)
        for record in self.log.records():
            self._by_prompt[record["prompt_id"]].append(_entry(record))

    def add(self, prompt_id: str, step: int, response: str, reward: float | None = None) -> None:
        """Store one response generated at policy step `step`."""
        n = sum(1 for e in self._by_prompt[prompt_id] if e.step == step)
        record = {"prompt_id": prompt_id, "step": step, "response": response, "reward": reward}
        self.log.append({"key": f"{step}/{prompt_id}/{n}", **record})
        self._by_prompt[prompt_id].append(_entry(record))

    def entries(self, prompt_id: str) -> list[Entry]:
        """All stored responses to a prompt, oldest first."""
        return list(self._by_prompt.get(prompt_id, ()))

    def prompt_ids(self) -> list[str]:
        """Prompts with at least one stored response."""
        return [pid for pid, entries in self._by_prompt.items() if entries]

    def latest_step(self) -> int:
        """The largest step stored (0 when empty)."""
        return max((e.step for entries in self._by_prompt.values() for e in entries), default=0)

    def latest_group(self, prompt_id: str) -> list[Entry]:
        """The responses to a prompt from the most recent step that has any."""
        entries = self._by_prompt.get(prompt_id, [])
        if not entries:
            return []
        last = max(e.step for e in entries)
        return [e for e in entries if e.step == last]

    def sample_in_window(
        self, prompt_id: str, current_step: int, window: AgeWindow, rng: random.Random, fallback: bool = False
    ) -> tuple[Entry | None, str]:
        """A past response to `prompt_id` whose age `current_step - step` lies in `window`.

        Returns the entry (None if there is none) and how it was found: "window", or with `fallback` EvoLM's
        relaxations in order, "relaxed_max_age" (any age >= low) then "relaxed_min_age" (any age >= 1, so the
        pair still has a strictly newer side).
        """
        aged = [(current_step - e.step, e) for e in self._by_prompt.get(prompt_id, ())]
        tiers = [("window", [e for age, e in aged if window.contains(age)])]
        if fallback:
            tiers.append(("relaxed_max_age", [e for age, e in aged if age >= window.low]))
            tiers.append(("relaxed_min_age", [e for age, e in aged if age >= 1]))
        for how, candidates in tiers:
            if candidates:
                return rng.choice(candidates), how
        return None, "none"


def _entry(record: dict) -> Entry:
    return Entry(record["prompt_id"], int(record["step"]), record["response"], record.get("reward"))
