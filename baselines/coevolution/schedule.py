"""The alternation schedule of a co-evolution run: which role trains, for how many GRPO steps, in which order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["policy", "generator"]
ROLES: tuple[Role, Role] = ("policy", "generator")


@dataclass(frozen=True)
class Phase:
    """One phase: `steps` consecutive GRPO steps of one role, the `index`-th phase of cycle `cycle`."""

    index: int
    cycle: int
    role: Role
    steps: int


def alternation(cycles: int, steps_per_phase: int, first: Role = "policy") -> list[Phase]:
    """Phases of `cycles` cycles, each `steps_per_phase` steps of `first` then as many of the other role.

    EvoLM's driver (`run_alternating_training`) trains the policy first in every cycle, then the rubric generator;
    EvoRubric needs criteria before the first Reasoner step, so it starts with the generator.

    >>> [(p.role, p.steps) for p in alternation(2, 3)]
    [('policy', 3), ('generator', 3), ('policy', 3), ('generator', 3)]
    """
    if cycles < 1 or steps_per_phase < 1:
        raise ValueError(f"cycles and steps_per_phase must be >= 1, got {cycles} and {steps_per_phase}")
    if first not in ROLES:
        raise ValueError(f"first must be one of {ROLES}, got {first!r}")
    second: Role = "generator" if first == "policy" else "policy"
    phases = []
    for cycle in range(cycles):
        for role in (first, second):
            phases.append(Phase(len(phases), cycle, role, steps_per_phase))
    return phases


def policy_budget(policy_steps: int, steps_per_phase: int, first: Role = "policy") -> list[Phase]:
    """The schedule that spends exactly `policy_steps` policy steps (the downstream comparison's budget).

    Cycles repeat until the budget is used; the last policy phase is cut short, and no generator phase follows
    the last policy phase (it could no longer change the policy). Generator steps are not counted in the budget.

    >>> [(p.role, p.steps) for p in policy_budget(5, 2)]
    [('policy', 2), ('generator', 2), ('policy', 2), ('generator', 2), ('policy', 1)]
    """
    if policy_steps < 1:
        raise ValueError(f"policy_steps must be >= 1, got {policy_steps}")
    cycles = -(-policy_steps // steps_per_phase)
    phases, left = [], policy_steps
    for phase in alternation(cycles, steps_per_phase, first):
        if phase.role == "policy":
            if left == 0:
                break
            phase = Phase(len(phases), phase.cycle, "policy", min(left, phase.steps))
            left -= phase.steps
        elif left == 0:
            break
        phases.append(Phase(len(phases), phase.cycle, phase.role, phase.steps))
    return phases
