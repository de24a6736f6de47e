"""Temporal-contrast label-noise audit: how often "the newer response is better" is wrong, per age window.

EvoLM labels the current response preferred over the model's own older one. On verifiable prompts the label
can be checked: it is *wrong* when the older response is correct and the newer one is not, *right* in the
opposite case, and a *tie* when both are correct or both wrong (the label then carries no information about
correctness). Rates are reported over all checked pairs and over the decided ones (right + wrong).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from baselines.coevolution.history import AgeWindow, ResponseHistory

Oracle = Callable[[str, str], "bool | None"]


@dataclass(frozen=True)
class ContrastPair:
    """A (newer, older) pair of responses to one prompt, labelled "newer preferred"."""

    prompt_id: str
    new: str
    old: str
    new_step: int
    old_step: int

    @property
    def age(self) -> int:
        """Policy steps between the two responses."""
        return self.new_step - self.old_step


def outcome(new_correct: bool | None, old_correct: bool | None) -> str:
    """Whether the label "newer is better" is "right", "wrong", a "tie" or "unknown" (no answer to check).

    >>> outcome(True, False), outcome(False, True), outcome(True, True), outcome(None, True)
    ('right', 'wrong', 'tie', 'unknown')
    """
    if new_correct is None or old_correct is None:
        return "unknown"
    if new_correct == old_correct:
        return "tie"
    return "right" if new_correct else "wrong"


def label_noise(pairs: Iterable[ContrastPair], oracle: Oracle, windows: Sequence[AgeWindow]) -> dict[str, Any]:
    """Counts and wrong-label rates per age window (a pair counts in every window containing its age).

    Returns `{window label: {n, right, wrong, tie, unknown, wrong_rate, wrong_rate_decided}}`; rates are NaN
    when their denominator is zero.
    """
    table = {w.label(): {"n": 0, "right": 0, "wrong": 0, "tie": 0, "unknown": 0} for w in windows}
    for pair in pairs:
        result = outcome(oracle(pair.prompt_id, pair.new), oracle(pair.prompt_id, pair.old))
        for window in windows:
            if window.contains(pair.age):
                row = table[window.label()]
                row["n"] += 1
                row[result] += 1
    for row in table.values():
        known = row["n"] - row["unknown"]
        decided = row["right"] + row["wrong"]
        row["wrong_rate"] = row["wrong"] / known if known else float("nan")
        row["wrong_rate_decided"] = row["wrong"] / decided if decided else float("nan")
    return table


def history_pairs(history: ResponseHistory, prompt_ids: Iterable[str] | None = None) -> list[ContrastPair]:
    """Every (newer, older) pair of stored responses to the same prompt from different steps."""
    pairs = []
    for pid in prompt_ids if prompt_ids is not None else history.prompt_ids():
        entries = history.entries(pid)
        for new in entries:
            pairs.extend(
                ContrastPair(pid, new.response, old.response, new.step, old.step)
                for old in entries
                if old.step < new.step
            )
    return pairs


def answer_oracle(answers: dict[str, str], is_correct: Callable[[str, str], bool]) -> Oracle:
    """An oracle from prompt answers and a checker such as `tasks.math_verified.is_correct` (None: no answer)."""

    def check(prompt_id: str, response: str) -> bool | None:
        answer = answers.get(prompt_id)
        return None if answer is None else bool(is_correct(response, answer))

    return check


def default_windows(max_age: int) -> list[AgeWindow]:
    """Doubling windows up to `max_age`: [1,1], [2,3], [4,7], ...

    >>> [w.label() for w in default_windows(6)]
    ['1-1', '2-3', '4-6']
    """
    windows, low = [], 1
    while low <= max_age:
        windows.append(AgeWindow(low, min(2 * low - 1, max_age)))
        low *= 2
    return windows
