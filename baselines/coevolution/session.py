"""The machinery both co-evolution trainers share: models in roles, optimizers, the frozen judge, step counters.

A `Session` owns the trained model(s) (one model in both roles, or a separate generator), one AdamW optimizer
per model, the frozen judge, the response history and the telemetry. Trainers call `run_phase` with the rows and
reward function of a phase; the session counts global and policy steps, writes one record per step, checks
after every phase that the judge's weights have not moved, and writes a phase checkpoint that an interrupted run
resumes from (`baselines.coevolution.checkpoint`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from baselines.coevolution import checkpoint
from baselines.coevolution.grpo import GRPOSettings, StepRecorder, make_optimizer, run_grpo_phase
from baselines.coevolution.heldout import EVAL_KEYS
from baselines.coevolution.history import ResponseHistory
from baselines.coevolution.judging import FrozenJudge, JudgeCounts
from baselines.coevolution.roles import ROLE_PROMPTS_VERSION, ModelHandle
from baselines.coevolution.schedule import Phase, Role
from baselines.coevolution.telemetry import Telemetry
from harness.monitor import OveroptimisationMonitor
from harness.rubric import ParseTally
from harness.store import Run
from harness.types import Chat, GenerationParams, Rubric


@dataclass(frozen=True)
class SessionConfig:
    """Models, GRPO settings of each role, and how rubrics are sampled outside GRPO.

    `generator_model=None` is the paper's default: one model plays both roles. Naming a generator model (even
    the same base) loads a separate generator, the two-model configuration EvoLM uses for weak dual-role bases.
    """

    base_model: str
    judge_model: str
    policy: GRPOSettings
    generator: GRPOSettings
    generator_model: str | None = None
    device: str = "cpu"
    seed: int = 0
    rubric_max_tokens: int = 160
    rubric_temperature: float = 0.6  # EvoLM's RUBRIC_TEMPERATURE
    rubric_retries: int = 1
    aggregate: str = "weighted_mean"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (part of the run config)."""
        return {**asdict(self), "roles": ROLE_PROMPTS_VERSION}


class Session:
    """Trained model(s), judge, history and telemetry of one run (see the module docstring)."""

    def __init__(self, config: SessionConfig, run: Run, judge_backend: Any = None) -> None:
        from harness import catalog

        self.config, self.run = config, run
        resumed = checkpoint.latest(run.dir)  # open_run has already cut the logs back to it
        policy_from = str(resumed / "policy") if resumed else config.base_model
        policy_model, tokenizer = catalog.load(policy_from, device=config.device)
        self.policy = ModelHandle(policy_model, tokenizer, "policy")
        if config.generator_model is None:
            self.generator = self.policy
        else:
            generator_from = str(resumed / "generator") if resumed else config.generator_model
            generator_model, generator_tokenizer = catalog.load(generator_from, device=config.device)
            self.generator = ModelHandle(generator_model, generator_tokenizer, "generator")
        self.optimizers = {
            id(h.model): make_optimizer(h.model, s.learning_rate)
            for h, s in ((self.generator, config.generator), (self.policy, config.policy))
        }
        self.judge = FrozenJudge(
            config.judge_model, run.dir / "judge-cache.sqlite", config.device, config.aggregate, judge_backend
        )
        self.history = ResponseHistory(run.dir / "responses.jsonl")
        self.telemetry = Telemetry(run)
        self.global_step = 0
        self.policy_step = 0
        self.phases_done = 0
        self.seconds_before = 0.0  # wall seconds of the attempts before a resume
        self.checkpoint_seconds = 0.0  # spent writing phase checkpoints (the last one's own write not counted)
        self.trainer_state: dict[str, Any] = {}  # what the trainer saved with the checkpoint resumed from
        self.recorder: StepRecorder | None = None
        self.monitor: OveroptimisationMonitor | None = None  # proxy vs gold over the policy steps (train_policy)
        if resumed is not None:
            self._restore(checkpoint.load_state(resumed))

    @property
    def two_models(self) -> bool:
        """Whether the generator is a separate model."""
        return self.generator is not self.policy

    def handle(self, role: Role) -> ModelHandle:
        """The model playing `role`."""
        return self.policy if role == "policy" else self.generator

    def note(self, **fields: Any) -> None:
        """Add telemetry to the record of the step in progress."""
        if self.recorder is not None:
            self.recorder.note(**fields)

    def run_schedule(
        self,
        phases: Sequence[Phase],
        train_phase: Callable[[Phase], None],
        evaluate: Callable[[str], None],
        eval_every: int,
        desc: str,
        trainer_state: Callable[[], dict[str, Any]] = dict,
    ) -> float:
        """Train each phase in order, timing it, with a checkpoint after each; return the wall seconds.

        `evaluate` runs before training, after every `eval_every`-th generator phase, and at the end unless the
        last phase was already followed by an evaluation. A resumed session starts after its checkpoint's phases;
        `trainer_state()` is what the trainer needs saved with each checkpoint (it reads it back from
        `self.trainer_state`). The seconds include the attempts before a resume.
        """
        started = time.perf_counter()
        if self.monitor is not None:
            self.monitor.start_clock(self.seconds_before)  # its wall_s and ours: one clock across resumes
        if self.phases_done == 0:
            evaluate("initial")
        done = phases[: self.phases_done]
        generator_phases = sum(p.role == "generator" for p in done)
        evaluated = not done or (done[-1].role == "generator" and generator_phases % eval_every == 0)
        for phase in tqdm(phases[self.phases_done :], desc=desc, initial=self.phases_done, total=len(phases)):
            evaluated, phase_started = False, time.perf_counter()
            train_phase(phase)
            self.telemetry.phase(phase.index, phase.role, time.perf_counter() - phase_started)
            if phase.role == "generator":
                generator_phases += 1
                if generator_phases % eval_every == 0:
                    evaluate(f"phase-{phase.index}")
                    evaluated = True
            self.phases_done += 1
            self.save_checkpoint(self.seconds_before + time.perf_counter() - started, trainer_state())
        if not evaluated:
            evaluate("final")
        return self.seconds_before + time.perf_counter() - started

    def save_checkpoint(self, seconds: float, trainer_state: dict[str, Any]) -> None:
        """Write the phase checkpoint of `phases_done` phases (`baselines.coevolution.checkpoint`)."""
        roles = {"policy": self.policy} | ({"generator": self.generator} if self.two_models else {})
        state = {
            "global_step": self.global_step,
            "policy_step": self.policy_step,
            "seconds": seconds,
            "checkpoint_seconds": self.checkpoint_seconds,
            "judge_counts": asdict(self.judge.counts),
            "optimizers": {
                role: [part.state_dict() for part in self.optimizers[id(h.model)]] for role, h in roles.items()
            },
            "trainer": trainer_state,
        }
        models = {role: (h.model, h.tokenizer) for role, h in roles.items()}
        started = time.perf_counter()
        checkpoint.save(self.run.dir, self.phases_done, models, state)
        self.checkpoint_seconds += time.perf_counter() - started

    def _restore(self, state: dict[str, Any]) -> None:
        for role, parts in state["optimizers"].items():
            for part, part_state in zip(self.optimizers[id(self.handle(role).model)], parts, strict=True):
                part.load_state_dict(part_state)
        self.global_step, self.policy_step = state["global_step"], state["policy_step"]
        self.phases_done, self.seconds_before = state["phases_done"], state["seconds"]
        self.checkpoint_seconds = state["checkpoint_seconds"]
        self.judge.counts = JudgeCounts(**state["judge_counts"])
        self.trainer_state = state["trainer"]

    def run_summary(self, seconds: float, tallies: dict[str, ParseTally]) -> dict[str, Any]:
        """The summary fields both trainers share.

        Timings (checkpoint writes included), step counts, skipped phases, parse and judge failures, held-out
        evaluations.
        """
        t = self.telemetry
        steps = t.records("step")
        return {
            "wall_seconds": seconds,
            "global_steps": self.global_step,
            "policy_steps": self.policy_step,
            "generator_steps": self.global_step - self.policy_step,
            "skipped_phases": [r["phase"] for r in t.records("skip")],
            "step_seconds": {
                role: sum(r["step_seconds"] for r in steps if r["role"] == role) for role in ("policy", "generator")
            },
            "phase_seconds": {r["phase"]: r["seconds"] for r in t.records("phase")},
            "checkpoint_seconds": self.checkpoint_seconds,
            "parse": {name: tally.as_dict() for name, tally in tallies.items()},
            "judge": self.judge.counts.as_dict(),
            "evaluations": {r["name"]: {k: r[k] for k in EVAL_KEYS} for r in t.records("eval")},
            "two_models": self.two_models,
        }

    def run_phase(self, phase: Phase, rows: Sequence[dict[str, Any]], reward_func: Callable[..., Any]) -> None:
        """Train `phase.role` for `phase.steps` GRPO steps, then check that the judge is unchanged."""
        handle = self.handle(phase.role)
        settings = self.config.policy if phase.role == "policy" else self.config.generator
        self.recorder = StepRecorder(lambda record: self._emit(phase, record))
        reward_func.__name__ = f"{phase.role}_reward"  # TRL logs rewards under the function's name
        monitors = [self.monitor] if self.monitor is not None and phase.role == "policy" else []
        for monitor in monitors:
            monitor.offset = self.policy_step  # one series over all policy phases
        handle.model.train()
        try:
            run_grpo_phase(
                handle.model,
                handle.tokenizer,
                rows,
                reward_func,
                phase.steps,
                settings,
                self.optimizers[id(handle.model)],
                self.run.dir / "trainer",
                self.config.seed * 1000 + phase.index,
                self.recorder,
                monitors,
            )
        finally:
            handle.model.eval()
            self.recorder = None
        self.judge.assert_unchanged()

    def _emit(self, phase: Phase, record: dict[str, Any]) -> None:
        self.global_step += 1
        self.policy_step += phase.role == "policy"
        context = {"phase": phase.index, "cycle": phase.cycle, "role": phase.role}
        counters = {"global_step": self.global_step, "policy_step": self.policy_step}
        self.telemetry.step({**context, **counters, **record, "judge": self.judge.counts.as_dict()})

    def next_policy_step(self) -> int:
        """The policy step a response generated now belongs to (the step in progress)."""
        return self.policy_step + 1

    def respond(self, chats: Sequence[Chat], seed: int, temperature: float | None = None) -> list[str]:
        """Sample policy responses outside GRPO (pair building, held-out checks)."""
        settings = self.config.policy
        params = GenerationParams(
            max_new_tokens=settings.max_completion_length,
            temperature=settings.temperature if temperature is None else temperature,
            seed=seed,
        )
        return self.policy.generate(list(chats), params)

    def write_rubrics(
        self, chats: Sequence[Chat], ids: Sequence[str], tally: ParseTally, seed: int, temperature: float | None = None
    ) -> list[Rubric | None]:
        """Rubrics from the generator role for generator chats; unparsable ones are resampled `rubric_retries` times.

        Every attempt is counted in `tally`, so its failure rate is per sample, not per prompt.
        """
        temperature = self.config.rubric_temperature if temperature is None else temperature
        out: list[Rubric | None] = [None] * len(chats)
        todo = list(range(len(chats)))
        for attempt in range(1 + (self.config.rubric_retries if temperature > 0 else 0)):
            params = GenerationParams(self.config.rubric_max_tokens, temperature, seed=seed + attempt)
            texts = self.generator.generate([chats[i] for i in todo], params)
            for i, text in zip(todo, texts, strict=True):
                out[i] = tally.parse(text, prompt_id=ids[i], source="generator")
            todo = [i for i in todo if out[i] is None]
            if not todo:
                break
        return out

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Save the policy and the generator (one directory when they are one model); returns both paths."""
        policy_dir = directory / "policy"
        self.policy.model.save_pretrained(policy_dir)
        self.policy.tokenizer.save_pretrained(policy_dir)
        if not self.two_models:
            return policy_dir, policy_dir
        generator_dir = directory / "generator"
        self.generator.model.save_pretrained(generator_dir)
        self.generator.tokenizer.save_pretrained(generator_dir)
        return policy_dir, generator_dir
