"""EvoRubric as a reward method: verified memory-pool rubrics for seen prompts, verified new ones otherwise."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from baselines.coevolution import data
from baselines.coevolution.method import CoEvolutionMethod
from baselines.evorubric.config import EvoRubricConfig
from baselines.evorubric.pool import MemoryPool
from baselines.evorubric.rewards import extender_chat
from baselines.evorubric.trainer import EvoRubricTrainer
from baselines.evorubric.verify import MetaVerifier
from harness.store import Run
from harness.types import Chat, GenerationParams, Rubric


class EvoRubric(CoEvolutionMethod):
    """EvoRubric (Guan et al. 2026): one policy as Reasoner and Rubric Generator, with verified criteria.

    `rubrics()` returns a prompt's memory pool when training saw the prompt; for other prompts the trained
    generator writes criteria greedily and, with stage 1 on, the frozen judge meta-verifies them (stages 2 and
    3 need a group of responses, which a static benchmark does not provide).
    """

    name = "evorubric"
    first_role = "generator"

    def __init__(self, config: EvoRubricConfig, checkpoint: str | None = None, judge_backend: Any = None) -> None:
        super().__init__(config, checkpoint, judge_backend)
        self.pool = MemoryPool(config.pool_capacity, config.evict_after)
        self._load_pool()

    def make_trainer(self, config: Any, run: Run, prompts: list, heldout: list, oracle: Any) -> EvoRubricTrainer:
        """An EvoRubric trainer over the run (prompts that are HealthBench prompts get their expert rubric)."""
        if config.seed_expert:
            prompts = with_expert_rubrics(prompts)
        return EvoRubricTrainer(config, run, prompts, heldout, self._judge_backend)

    def adopt(self, run: Run) -> None:
        """Load the trained pool as well as the models."""
        super().adopt(run)
        self._load_pool()

    def _load_pool(self) -> None:
        """Read `pool.json`, which `fit` saves beside the model directories (`models/pool.json`)."""
        path = self.generator_dir.parent / "pool.json" if self.generator_dir else None
        if path is not None and path.is_file():
            self.pool = MemoryPool.from_json(json.loads(path.read_text()))

    def rubrics(self, prompts: Sequence[Chat]) -> list[Rubric | None]:
        """The pool of a trained prompt (matched by content), else a generated and meta-verified rubric."""
        ids = [data.chat_id(p) for p in prompts]
        pooled = {pid: self.pool.rubric(pid) for pid in self.pool.entries}
        known = {i: pooled[i] for i in ids if pooled.get(i) is not None}
        self._rubrics.update(known)
        return super().rubrics(prompts)

    def write_rubrics(self, prompts: Sequence[Chat], ids: Sequence[str]) -> list[Rubric | None]:
        """Greedy generator rubrics, without the criteria the frozen judge's meta-verification rejects."""
        params = GenerationParams(max_new_tokens=self.config.session.rubric_max_tokens, temperature=0.0)
        texts = self.generator().generate([extender_chat(p, []) for p in prompts], params)
        rubrics = [self.tally.parse(t, prompt_id=i, source=self.name) for t, i in zip(texts, ids, strict=True)]
        if not self.config.meta_verifier:
            return rubrics
        meta = MetaVerifier(self.judge().judge, self.config.meta_threshold)
        return [_verified(meta, p, r) for p, r in zip(prompts, rubrics, strict=True)]


def with_expert_rubrics(prompts: Sequence[data.Prompt]) -> list[data.Prompt]:
    """Prompts with the physician rubric attached where the chat is a HealthBench conversation."""
    from dataclasses import replace

    if all(p.expert_rubric is not None for p in prompts):
        return list(prompts)
    expert = {data.chat_id(r.chat): r.rubric for r in data.healthbench_records()}
    return [p if p.expert_rubric else replace(p, expert_rubric=expert.get(data.chat_id(p.chat))) for p in prompts]


def _verified(meta: MetaVerifier, chat: Chat, rubric: Rubric | None) -> Rubric | None:
    from baselines.coevolution.roles import question_text

    if rubric is None:
        return None
    flags = meta.check(question_text(chat), [], [c.text for c in rubric.criteria])
    kept = tuple(c for c, f in zip(rubric.criteria, flags, strict=True) if not f)
    return Rubric(kept, rubric.source, rubric.prompt_id) if any(c.weight > 0 for c in kept) else None
