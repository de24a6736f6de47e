"""EvoLM: co-evolved discriminative rubrics (stellalisy/EvoLM), reimplemented on TRL.

One model answers prompts (policy) and writes rubrics for them (generator); training alternates GRPO phases of
the two roles. The policy's reward is a frozen judge's score under the generator's rubric; the generator's is
the discriminative utility of its rubric on a temporal-contrast pair (the current response beats the model's own
response from an age window earlier). See `trainer` for the loop and `config` for presets.
"""

from __future__ import annotations

from typing import Any

from baselines.evolm.config import EvoLMConfig, make_config
from baselines.evolm.method import EvoLM
from harness.methods import reward_method

__all__ = ["EvoLM", "EvoLMConfig", "evolm", "make_config"]


@reward_method("evolm", kind="coevolution")
def evolm(preset: str = "cpu", checkpoint: str | None = None, **options: Any) -> EvoLM:
    """EvoLM: policy and rubric generator co-evolved by GRPO, rubrics applied by a frozen judge.

    Args:
        preset: "test" (tiny-random), "cpu" (SmolLM2-135M; tens of minutes on 2 cores) or "gpu".
        checkpoint: A trained generator directory, to score without fitting.
        **options: Overrides of `EvoLMConfig` or `SessionConfig` fields (e.g. `age_window=(5, 20)`,
            `pairing="mixed"`, `generator_model="smollm2-135m"` for the two-model configuration).
    """
    return EvoLM(make_config(preset, **options), checkpoint=checkpoint)
