"""EvoRubric: single-policy co-evolution with verified rubrics (Guan et al. 2026, arXiv 2605.29847), on TRL.

One policy alternates a Rubric Generator role (proposes criteria for a prompt) and a Reasoner role (answers).
New criteria pass a meta-verifier, zero-variance pruning and leave-one-out peer consensus (`verify`), and the
survivors enter a per-prompt memory pool (`pool`) whose criteria give the Reasoner dense multi-objective
rewards. Pools can start from HealthBench's expert rubrics. Every verification stage can be switched off.
"""

from __future__ import annotations

from typing import Any

from baselines.evorubric.config import EvoRubricConfig, make_config
from baselines.evorubric.method import EvoRubric
from harness.methods import reward_method

__all__ = ["EvoRubric", "EvoRubricConfig", "evorubric", "make_config"]


@reward_method("evorubric", kind="coevolution")
def evorubric(preset: str = "cpu", checkpoint: str | None = None, **options: Any) -> EvoRubric:
    """EvoRubric: one policy as Reasoner and Rubric Generator; verified criteria in a per-prompt memory pool.

    Args:
        preset: "test" (tiny-random), "cpu" (SmolLM2-135M on short HealthBench prompts) or "gpu".
        checkpoint: A trained model directory (`fit` saves `pool.json` in its parent), to score without fitting.
        **options: Overrides of `EvoRubricConfig` or `SessionConfig` fields (e.g. `loo_consensus=False`,
            `seed_expert=False`, `meta_model="judge"`).
    """
    return EvoRubric(make_config(preset, **options), checkpoint=checkpoint)
