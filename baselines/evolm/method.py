"""EvoLM as a reward method: co-evolved rubric generator, frozen judge, co-evolved policy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from baselines.coevolution.method import CoEvolutionMethod
from baselines.coevolution.roles import generator_chat
from baselines.evolm.config import EvoLMConfig
from baselines.evolm.trainer import EvoLMTrainer
from harness.store import Run
from harness.types import Chat, Rubric


class EvoLM(CoEvolutionMethod):
    """EvoLM (Li et al. 2026): one model as policy and rubric generator, trained in alternating GRPO phases.

    The policy is rewarded by a frozen judge applying the generator's rubric; the generator by the discriminative
    utility of its rubrics on temporal-contrast pairs (or rubric-conditioned pairs). `rubrics()` asks the trained
    generator greedily, once per prompt.
    """

    name = "evolm"
    first_role = "policy"

    def __init__(self, config: EvoLMConfig, checkpoint: str | None = None, judge_backend: Any = None) -> None:
        super().__init__(config, checkpoint, judge_backend)

    def make_trainer(self, config: Any, run: Run, prompts: list, heldout: list, oracle: Any) -> EvoLMTrainer:
        """An EvoLM trainer over the run."""
        return EvoLMTrainer(config, run, prompts, heldout, oracle, self._judge_backend)

    def write_rubrics(self, prompts: Sequence[Chat], ids: Sequence[str]) -> list[Rubric | None]:
        """Greedy rubrics from the trained generator, parsed and counted in `self.tally`."""
        from harness.types import GenerationParams

        params = GenerationParams(max_new_tokens=self.config.session.rubric_max_tokens, temperature=0.0)
        texts = self.generator().generate([generator_chat(p) for p in prompts], params)
        return [self.tally.parse(t, prompt_id=i, source=self.name) for t, i in zip(texts, ids, strict=True)]
