"""EvoLM's co-evolution loop: alternating policy and rubric-generator GRPO phases over one model (or two).

Policy phase: the generator writes a rubric for each phase prompt (sampled at EvoLM's rubric temperature, once
per phase: in two-model mode the generator is frozen during the phase, in one-model mode the rubric is as old as
the phase), the policy trains on the frozen judge's scores under those rubrics, and every response is stored
with its policy step. Generator phase: pairs are built once per phase (a fresh current response against the
model's own response from the age window, newer preferred; or EvoLM's rubric-conditioned alternative), and the
generator trains on the discriminative utility of the rubrics it samples for them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from baselines.coevolution.audit import ContrastPair, Oracle, default_windows, history_pairs, label_noise
from baselines.coevolution.data import Prompt
from baselines.coevolution.heldout import heldout_record
from baselines.coevolution.history import AgeWindow
from baselines.coevolution.roles import generator_chat, policy_chat, policy_with_rubric_chat
from baselines.coevolution.schedule import Phase
from baselines.coevolution.session import Session
from baselines.evolm.config import EvoLMConfig
from baselines.evolm.rewards import generator_reward_func, policy_reward_func
from baselines.evolm.utility import Pair
from harness.rubric import ParseTally, rubric_to_json
from harness.store import ResultLog, Run
from harness.types import PreferenceItem, Rubric


class EvoLMTrainer:
    """Runs a schedule of EvoLM phases and writes telemetry, pairs and rubrics to the run store."""

    def __init__(
        self,
        config: EvoLMConfig,
        run: Run,
        prompts: Sequence[Prompt],
        heldout: Sequence[PreferenceItem] = (),
        oracle: Oracle | None = None,
        judge_backend: Any = None,
    ) -> None:
        if not prompts:
            raise ValueError("evolm: no training prompts")
        self.config, self.run, self.oracle = config, run, oracle
        self.prompts = {p.id: p for p in prompts}
        self.heldout = list(heldout)
        self.session = Session(config.session, run, judge_backend)
        self.window = AgeWindow(*config.age_window)
        self.rng = random.Random(config.session.seed)
        self.pair_log = ResultLog(run.dir / "pairs.jsonl")
        self.rubric_log = ResultLog(run.dir / "rubrics.jsonl")
        self.sample_log = ResultLog(run.dir / "generator_samples.jsonl")
        self.tallies = {"policy_phase_rubrics": ParseTally(), "generator_samples": ParseTally()}
        if saved := self.session.trainer_state:  # resuming from a phase checkpoint
            self.rng.setstate(saved["rng"])
            self.tallies = saved["tallies"]

    def train(self, phases: Sequence[Phase]) -> dict[str, Any]:
        """Run the phases (evaluating held-out utility before and after generator phases); return the summary."""
        train_phase = lambda p: (self.policy_phase if p.role == "policy" else self.generator_phase)(p)  # noqa: E731
        state = lambda: {"rng": self.rng.getstate(), "tallies": self.tallies}  # noqa: E731
        seconds = self.session.run_schedule(
            phases, train_phase, self.evaluate, self.config.eval_every, "evolm phases", state
        )
        return self.summary(seconds)

    def save_extra(self, directory: Path) -> None:
        """EvoLM keeps nothing besides the models (pairs and rubrics are already in the run store)."""

    # ------------------------------------------------------------------------------------------ phases
    def _phase_prompts(self, phase: Phase, candidates: Sequence[str]) -> list[Prompt]:
        settings = self.config.session.policy if phase.role == "policy" else self.config.session.generator
        wanted = settings.prompts_per_step * phase.steps
        chosen = self.rng.sample(list(candidates), min(wanted, len(candidates)))
        return [self.prompts[pid] for pid in chosen]

    def phase_rubrics(self, phase: Phase, prompts: Sequence[Prompt]) -> list[Rubric | None]:
        """The generator's rubric for each prompt of a policy phase (sampled, resampled once if unparsable)."""
        return self.session.write_rubrics(
            [generator_chat(p.chat) for p in prompts],
            [p.id for p in prompts],
            self.tallies["policy_phase_rubrics"],
            seed=self.config.session.seed * 7919 + phase.index,
        )

    def policy_phase(self, phase: Phase) -> None:
        """Rubrics for the phase's prompts from the generator, then GRPO on the judge's scores under them."""
        prompts = self._phase_prompts(phase, list(self.prompts))
        rubrics = self.phase_rubrics(phase, prompts)
        for p, rubric in zip(prompts, rubrics, strict=True):
            record = rubric_to_json(rubric) if rubric is not None else None
            self.rubric_log.append({"key": f"{phase.index}/{p.id}", "phase": phase.index, "rubric": record})
        by_id = {p.id: r for p, r in zip(prompts, rubrics, strict=True)}
        # GRPO steps on prompts without a rubric would earn no reward, so they train only when no prompt has one
        # (their responses still enter the history then, for the temporal pairs).
        with_rubric = [p for p in prompts if by_id[p.id] is not None] or prompts
        rows = [{"prompt": policy_chat(p.chat), "prompt_id": p.id} for p in with_rubric]
        chats = {p.id: list(p.chat) for p in prompts}
        s = self.session
        reward = policy_reward_func(chats, by_id, s.judge, s.history, s.next_policy_step, s.note)
        s.run_phase(phase, rows, reward)

    def generator_phase(self, phase: Phase) -> None:
        """Pairs for the phase, then GRPO on the discriminative utility of sampled rubrics."""
        pairs = self.build_pairs(phase)
        for pair in pairs:
            self.pair_log.append({**pair.to_record(), "key": f"{phase.index}/{pair.key}", "phase": phase.index})
        if not pairs:
            self.session.telemetry.skip(phase.index, "no pairs (no older response in the age window)")
            return
        by_key = {p.key: p for p in pairs}
        rows = [{"prompt": generator_chat(p.chat), "pair_key": p.key} for p in pairs]
        s, c = self.session, self.config
        total = self.tallies["generator_samples"]
        reward = generator_reward_func(
            by_key, s.judge, total, c.margin_weight, c.format_weight, s.note, self._keep_sample(phase)
        )
        s.run_phase(phase, rows, reward)

    def _keep_sample(self, phase: Phase) -> Callable[[dict[str, Any]], None]:
        """A writer of sampled rubrics to `generator_samples.jsonl`, keyed by phase and sample number."""

        def keep(record: dict[str, Any]) -> None:
            key = f"{phase.index}/{len(self.sample_log)}"
            self.sample_log.append(
                {"key": key, "phase": phase.index, "global_step": self.session.global_step + 1, **record}
            )

        return keep

    def build_pairs(self, phase: Phase) -> list[Pair]:
        """The phase's pairs by the configured pairing ("mixed" alternates the two kinds over prompts)."""
        kinds = {"temporal": ["temporal"], "rubric_conditioned": ["rubric_conditioned"]}
        order = kinds.get(self.config.pairing, ["temporal", "rubric_conditioned"])
        # Temporal pairs need a stored response, so a purely temporal phase draws only answered prompts.
        answered = [pid for pid in self.session.history.prompt_ids() if pid in self.prompts]
        prompts = self._phase_prompts(phase, answered if order == ["temporal"] else list(self.prompts))
        groups = {kind: [p for i, p in enumerate(prompts) if order[i % len(order)] == kind] for kind in order}
        seed = self.config.session.seed * 104729 + phase.index
        pairs = self.temporal_pairs(groups.get("temporal", []), seed)
        return pairs + self.conditioned_pairs(phase, groups.get("rubric_conditioned", []), seed)

    def temporal_pairs(self, prompts: Sequence[Prompt], seed: int) -> list[Pair]:
        """(fresh current response, own response from the age window) per prompt that has one; newer preferred."""
        current = self.session.policy_step
        old = {}
        for p in prompts:
            entry, found = self.session.history.sample_in_window(
                p.id, current, self.window, self.rng, self.config.window_fallback
            )
            if entry is not None:
                old[p.id] = (entry, found)
        eligible = [p for p in prompts if p.id in old]
        fresh = self.session.respond([policy_chat(p.chat) for p in eligible], seed=seed)
        return [
            Pair(
                f"t/{p.id}",
                p.id,
                p.chat,
                new,
                old[p.id][0].response,
                "temporal",
                current,
                old[p.id][0].step,
                old[p.id][1],
            )
            for p, new in zip(eligible, fresh, strict=True)
        ]

    def conditioned_pairs(self, phase: Phase, prompts: Sequence[Prompt], seed: int) -> list[Pair]:
        """(answer with the generator's rubric in context, question-only answer) per prompt with a parsed rubric."""
        if not prompts:
            return []
        rubrics = self.phase_rubrics(phase, prompts)
        kept = [(p, r) for p, r in zip(prompts, rubrics, strict=True) if r is not None]
        with_rubric = self.session.respond([policy_with_rubric_chat(p.chat, r) for p, r in kept], seed=seed)
        plain = self.session.respond([policy_chat(p.chat) for p, _ in kept], seed=seed + 1)
        return [
            Pair(f"c/{p.id}", p.id, p.chat, good, base, "rubric_conditioned", found="conditioned")
            for (p, _), good, base in zip(kept, with_rubric, plain, strict=True)
        ]

    # -------------------------------------------------------------------------------------- telemetry
    def evaluate(self, name: str) -> None:
        """Held-out utility of greedy generator rubrics: does the judge prefer each item's chosen response?"""
        if not self.heldout:
            return
        tally = ParseTally()
        chats = [generator_chat(it.prompt) for it in self.heldout]
        rubrics = self.session.write_rubrics(chats, [it.id for it in self.heldout], tally, seed=0, temperature=0.0)
        counters = {"policy_step": self.session.policy_step, "global_step": self.session.global_step}
        record = heldout_record(self.session.judge, self.heldout, rubrics, tally)
        self.session.telemetry.evaluation(name, {**counters, **record})

    def summary(self, seconds: float) -> dict[str, Any]:
        """Run summary: timings, counts, parse and judge failures, held-out evaluations, label-noise audit."""
        summary = self.session.run_summary(seconds, self.tallies)
        if self.oracle is not None:
            summary["label_noise"] = self.audit()
        return summary

    def audit(self) -> dict[str, Any]:
        """Label-noise audit of the training pairs (per configured window) and of all history pairs (per age)."""
        assert self.oracle is not None
        trained = [
            ContrastPair(r["prompt_id"], r["preferred"], r["other"], r["new_step"], r["old_step"])
            for r in self.pair_log.records()
            if r["kind"] == "temporal"
        ]
        windows = default_windows(max(self.session.policy_step, 1))
        return {
            "training_pairs": label_noise(trained, self.oracle, [self.window, *windows]),
            "history_pairs": label_noise(history_pairs(self.session.history), self.oracle, windows),
        }
