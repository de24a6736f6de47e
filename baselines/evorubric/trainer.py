"""EvoRubric's loop: Rubric Generator and Reasoner phases of one policy, with a verified per-prompt memory pool.

Each cycle starts with a generator phase (the pool needs criteria before the Reasoner can be rewarded): the
Reasoner's latest response group per prompt (or a fresh one) is the evidence the verification stages use.
Then a Reasoner phase trains on the pool's dense rewards. Held-out utility is measured on rubrics the generator
writes for unseen prompts, checked by the meta-verifier only (the other stages need a response group).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from baselines.coevolution.data import Prompt, chat_id
from baselines.coevolution.heldout import heldout_record
from baselines.coevolution.roles import policy_chat, question_text
from baselines.coevolution.schedule import Phase
from baselines.coevolution.session import Session
from baselines.coevolution.telemetry import rubric_summary
from baselines.evorubric.config import EvoRubricConfig
from baselines.evorubric.pipeline import Stages
from baselines.evorubric.pool import MemoryPool
from baselines.evorubric.rewards import extender_chat, generator_reward_func, reasoner_reward_func
from baselines.evorubric.verify import MetaVerifier
from harness.judge import Judge
from harness.rubric import ParseTally
from harness.store import Run
from harness.types import PreferenceItem, Rubric


class EvoRubricTrainer:
    """Runs a schedule of EvoRubric phases; writes telemetry and the final pool to the run store."""

    def __init__(
        self,
        config: EvoRubricConfig,
        run: Run,
        prompts: Sequence[Prompt],
        heldout: Sequence[PreferenceItem] = (),
        judge_backend: Any = None,
    ) -> None:
        if not prompts:
            raise ValueError("evorubric: no training prompts")
        self.config, self.run = config, run
        self.prompts = {p.id: p for p in prompts}
        self.heldout = list(heldout)
        self.session = Session(config.session, run, judge_backend)
        self.rng = random.Random(config.session.seed)
        self.pool = MemoryPool(config.pool_capacity, config.evict_after)
        self.tallies = {"generator_samples": ParseTally()}
        if config.seed_expert:
            for p in prompts:
                if p.expert_rubric is not None:
                    self.pool.seed(p.id, p.expert_rubric, config.seed_max)
        if saved := self.session.trainer_state:  # resuming from a phase checkpoint
            self.rng.setstate(saved["rng"])
            self.tallies, self.pool = saved["tallies"], saved["pool"]
        self.stages = Stages(self.session.judge, self.meta_verifier(), config.zero_variance, config.loo_consensus)

    def meta_verifier(self) -> MetaVerifier | None:
        """Stage 1 with the trained policy (cache off: its weights move) or the frozen judge."""
        if not self.config.meta_verifier:
            return None
        if self.config.meta_model == "judge":
            return MetaVerifier(self.session.judge, self.config.meta_threshold)
        return MetaVerifier(_PolicyJudge(self.session), self.config.meta_threshold)

    def train(self, phases: Sequence[Phase]) -> dict[str, Any]:
        """Run the phases and return the summary."""
        train_phase = lambda p: (self.reasoner_phase if p.role == "policy" else self.generator_phase)(p)  # noqa: E731
        state = lambda: {"rng": self.rng.getstate(), "tallies": self.tallies, "pool": self.pool}  # noqa: E731
        seconds = self.session.run_schedule(
            phases, train_phase, self.evaluate, self.config.eval_every, "evorubric phases", state
        )
        return self.summary(seconds)

    def save_extra(self, directory: Path) -> None:
        """Save the memory pool next to the models (the method's `rubrics()` reads it)."""
        directory.mkdir(parents=True, exist_ok=True)
        # Keyed by chat content, so `rubrics()` finds a prompt's pool whatever id its source gave it.
        pools = {chat_id(self.prompts[pid].chat): rows for pid, rows in self.pool.to_json().items()}
        (directory / "pool.json").write_text(json.dumps(pools, indent=1))

    # ------------------------------------------------------------------------------------------ phases
    def _sample(self, phase: Phase, ids: Sequence[str]) -> list[Prompt]:
        settings = self.config.session.policy if phase.role == "policy" else self.config.session.generator
        chosen = self.rng.sample(list(ids), min(settings.prompts_per_step * phase.steps, len(ids)))
        return [self.prompts[pid] for pid in chosen]

    def response_groups(self, prompts: Sequence[Prompt], seed: int) -> dict[str, list[str]]:
        """Per prompt, the Reasoner's latest group from the history, or a fresh group when it has none."""
        groups = {p.id: [e.response for e in self.session.history.latest_group(p.id)] for p in prompts}
        missing = [p for p in prompts if len(groups[p.id]) < 2]
        n = self.config.session.policy.num_generations
        for k in range(n):  # one call per sample: a seed covers a batch, so identical chats need distinct seeds
            texts = self.session.respond([policy_chat(p.chat) for p in missing], seed + k)
            for p, text in zip(missing, texts, strict=True):
                groups[p.id] = [*groups[p.id], text] if k else [text]
        return groups

    def generator_phase(self, phase: Phase) -> None:
        """Rubric Generator GRPO on the validated share of sampled criteria; survivors join the pool."""
        prompts = self._sample(phase, list(self.prompts))
        groups = self.response_groups(prompts, seed=self.config.session.seed * 7919 + phase.index)
        rows = [
            {"prompt": extender_chat(p.chat, [c.text for c in self.pool.criteria(p.id)]), "prompt_id": p.id}
            for p in prompts
        ]
        chats = {p.id: list(p.chat) for p in prompts}
        s = self.session
        total = self.tallies["generator_samples"]
        reward = generator_reward_func(chats, groups, self.pool, self.stages, s.next_policy_step, total, s.note)
        s.run_phase(phase, rows, reward)

    def reasoner_phase(self, phase: Phase) -> None:
        """Reasoner GRPO on the pool's dense rewards, over prompts whose pool can score a response."""
        pooled = [pid for pid in self.prompts if self.pool.rubric(pid) is not None]
        if not pooled:
            self.session.telemetry.skip(phase.index, "no prompt has pool criteria")
            return
        prompts = self._sample(phase, pooled)
        rows = [{"prompt": policy_chat(p.chat), "prompt_id": p.id} for p in prompts]
        chats = {p.id: list(p.chat) for p in prompts}
        s = self.session
        prune = self.config.zero_variance
        reward = reasoner_reward_func(chats, self.pool, s.judge, s.history, s.next_policy_step, prune, s.note)
        s.run_phase(phase, rows, reward)

    # -------------------------------------------------------------------------------------- telemetry
    def heldout_rubrics(self, items: Sequence[PreferenceItem], tally: ParseTally) -> list[Rubric | None]:
        """Greedy generator rubrics for unseen prompts, meta-verified when stage 1 is on."""
        chats = [extender_chat(it.prompt, []) for it in items]
        rubrics = self.session.write_rubrics(chats, [it.id for it in items], tally, seed=0, temperature=0.0)
        return [self.stages_meta_only(it.prompt, r) for it, r in zip(items, rubrics, strict=True)]

    def stages_meta_only(self, chat: Sequence[Any], rubric: Rubric | None) -> Rubric | None:
        """A rubric without the criteria the meta-verifier rejects (None if nothing usable is left)."""
        if rubric is None or self.stages.meta is None:
            return rubric
        flags = self.stages.meta.check(question_text(list(chat)), [], [c.text for c in rubric.criteria])
        kept = tuple(c for c, f in zip(rubric.criteria, flags, strict=True) if not f)
        return Rubric(kept, rubric.source, rubric.prompt_id) if any(c.weight > 0 for c in kept) else None

    def evaluate(self, name: str) -> None:
        """Held-out utility of generated rubrics, and the pool's rubric statistics."""
        if not self.heldout:
            return
        tally = ParseTally()
        record = heldout_record(self.session.judge, self.heldout, self.heldout_rubrics(self.heldout, tally), tally)
        counters = {"policy_step": self.session.policy_step, "global_step": self.session.global_step}
        self.session.telemetry.evaluation(name, {**counters, **record, "pool": self.pool.stats()})

    def summary(self, seconds: float) -> dict[str, Any]:
        """Run summary: timings, counts, parse and judge failures, pool, held-out evaluations."""
        pools = [self.pool.rubric(pid) for pid in self.prompts]
        pool = {**self.pool.stats(), "rubrics": rubric_summary(pools)}
        return {**self.session.run_summary(seconds, self.tallies), "pool": pool}


class _PolicyJudge:
    """`verdicts(items)` from the model being trained (the paper's single policy as meta-verifier)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.judge = Judge(session.policy, cache=None, progress=False)

    def verdicts(self, items: Sequence[Any]) -> list:
        """Grade in eval mode, then restore the model's training mode."""
        with self.session.policy.evaluating():
            return self.judge.verdicts(items)
