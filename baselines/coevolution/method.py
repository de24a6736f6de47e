"""A co-evolution trainer as a reward method: `fit`, `rubrics`, `score` and `train_policy` over one base class.

`fit` co-evolves on the fit context's prompts (or the config's default source) and keeps the trained generator;
`rubrics` asks that generator (through a subclass hook); `score` applies the rubrics with the frozen judge
(NaN where a prompt has no rubric); `train_policy` co-evolves from the comparison's base model on its prompts,
spending exactly its policy-step budget, and returns the co-evolved policy. Finished runs are content-keyed and
reused, so calling `fit` again with the same inputs trains nothing.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from baselines.coevolution import checkpoint, data
from baselines.coevolution.audit import answer_oracle
from baselines.coevolution.data import Prompt, chat_id, prompts_from_chats, split_items
from baselines.coevolution.judging import FrozenJudge
from baselines.coevolution.overrides import apply_overrides
from baselines.coevolution.roles import ModelHandle
from baselines.coevolution.schedule import Phase, Role, alternation, policy_budget
from baselines.coevolution.telemetry import open_run
from harness.cache import content_key
from harness.methods import FitContext, PolicyContext
from harness.monitor import OveroptimisationMonitor
from harness.rubric import ParseTally
from harness.store import Run
from harness.types import Chat, PreferenceItem, Rubric

FIT_OPTIONS = ("prompts", "heldout_items")
# `probe` feeds the over-optimisation monitor of the policy phases; `callbacks` (harness.rl's extra GRPO hooks) are
# accepted and not used: co-evolution runs one trainer per phase and writes its own telemetry.
POLICY_OPTIONS = ("heldout_items", "lora", "probe", "callbacks")


class CoEvolutionMethod(ABC):
    """Shared reward-method behaviour of EvoLM and EvoRubric; subclasses provide the trainer and the rubrics."""

    name = "coevolution"
    first_role: Role = "policy"

    def __init__(self, config: Any, checkpoint: str | None = None, judge_backend: Any = None) -> None:
        self.config = config
        self.generator_dir = Path(checkpoint) if checkpoint else None
        self.policy_dir: Path | None = None
        self.run_dir: Path | None = None
        self.summary: dict[str, Any] | None = None
        self.tally = ParseTally()
        self._judge_backend = judge_backend
        self._judge: FrozenJudge | None = None
        self._generator: ModelHandle | None = None
        self._rubrics: dict[str, Rubric | None] = {}

    # ----------------------------------------------------------------------------------------- hooks
    @abstractmethod
    def make_trainer(self, config: Any, run: Run, prompts: list[Prompt], heldout: list, oracle: Any) -> Any:
        """The method's trainer (with `.train(phases) -> summary`, `.session`, `.save_extra(dir)`)."""

    def default_data(self) -> tuple[list[Prompt], list[PreferenceItem], Any]:
        """Prompts, held-out items and label oracle used when the fit context gives neither items nor prompts.

        The config's `data` picks math-verified prompts with answers (the label-noise audit's oracle) or
        HealthBench train-fold prompts; `n_prompts` and `n_heldout` size them.
        """
        c = self.config
        if c.data == "math":
            from tasks.math_verified import is_correct

            prompts = data.math_prompts(c.n_prompts, c.session.seed)
            heldout = data.drop_overlap(prompts, data.math_heldout_items(c.n_heldout, c.session.seed))
            return prompts, heldout, answer_oracle({p.id: p.answer for p in prompts}, is_correct)
        prompts = data.healthbench_prompts(c.n_prompts)
        return prompts, data.drop_overlap(prompts, data.healthbench_heldout_items(c.n_heldout)), None

    @abstractmethod
    def write_rubrics(self, prompts: Sequence[Chat], ids: Sequence[str]) -> list[Rubric | None]:
        """Rubrics for prompts not seen before (after `fit` or from a checkpoint)."""

    def adopt(self, run: Run) -> None:
        """Load what a finished run produced (subclasses add their own artefacts)."""
        self.run_dir = run.dir  # telemetry.jsonl, items.jsonl: what `harness report` draws
        self.summary = run.manifest["summary"]
        self.policy_dir = Path(run.manifest["policy_dir"])
        self.generator_dir = Path(run.manifest["generator_dir"])
        self._generator, self._rubrics = None, {}

    # ------------------------------------------------------------------------------------- training
    def fit(self, ctx: FitContext) -> None:
        """Co-evolve on the context's items (a hashed 20% held out for utility) or the config's default data."""
        _check_options(ctx.options, FIT_OPTIONS, "FitContext")
        oracle = None
        if ctx.train_items:
            prompts, heldout = split_items(ctx.train_items)
        elif "prompts" in ctx.options:
            prompts, heldout = prompts_from_chats(ctx.options["prompts"]), []
        else:
            prompts, heldout, oracle = self.default_data()
        heldout = list(ctx.options.get("heldout_items", heldout))
        config = apply_overrides(self.config, {"seed": ctx.seed})
        phases = alternation(config.cycles, config.steps_per_phase, self.first_role)
        ids = {"prompts": [p.id for p in prompts], "heldout": [h.id for h in heldout]}
        key = content_key(self.name, config=config.to_dict(), **ids)
        self._run(config, Path(ctx.workdir) / self.name / key[:16], phases, prompts, heldout, oracle)

    def train_policy(self, ctx: PolicyContext) -> Path:
        """Co-evolve from `ctx.base_model` on `ctx.prompts` for exactly `ctx.steps` policy steps; return the policy.

        Like GRPO runs, the policy steps are monitored: proxy reward and gold probe accuracy go to
        `<output_dir>/steps.jsonl` (`harness.monitor`; probe size and interval from the RL preset `ctx.preset`).
        """
        from harness.rl import get_preset, probe_set

        _check_options(ctx.options, POLICY_OPTIONS, "PolicyContext")
        if ctx.options.get("lora"):
            raise ValueError(f"{self.name}: PolicyContext.options['lora'] is not supported (all weights train)")
        config = apply_overrides(self.config, {"base_model": ctx.base_model, "seed": ctx.seed})
        prompts = prompts_from_chats(ctx.prompts)
        heldout = list(ctx.options.get("heldout_items", []))
        phases = policy_budget(ctx.steps, config.steps_per_phase, self.first_role)
        preset = get_preset(ctx.preset)
        probe = probe_set(ctx, preset)
        out = Path(ctx.output_dir)
        monitor = OveroptimisationMonitor(
            out, "policy_reward", probe, preset.probe_every, preset.probe_max_new_tokens, total_steps=ctx.steps
        )
        self._run(config, out, phases, prompts, heldout, None, monitor)
        assert self.policy_dir is not None
        return self.policy_dir

    def _run(
        self,
        config: Any,
        out: Path,
        phases: list[Phase],
        prompts: list,
        heldout: list,
        oracle: Any,
        monitor: OveroptimisationMonitor | None = None,
    ) -> None:
        schedule = [(p.role, p.steps) for p in phases]
        run_config = {"method": self.name, "config": config.to_dict(), "schedule": schedule}
        run = open_run(out, "run", {**run_config, "prompts": [p.id for p in prompts]})
        if run.manifest.get("status") != "done":
            trainer = self.make_trainer(config, run, prompts, heldout, oracle)
            trainer.session.monitor = monitor
            summary = trainer.train(phases)
            policy_dir, generator_dir = trainer.session.save(out / "models")
            trainer.save_extra(out / "models")
            run.note(status="done", summary=summary, policy_dir=str(policy_dir), generator_dir=str(generator_dir))
            checkpoint.discard(run.dir)  # optimizer states are twice the model; the final models are saved
        self.adopt(run)

    # -------------------------------------------------------------------------------------- scoring
    def generator(self) -> ModelHandle:
        """The trained rubric generator, loaded on first use."""
        if self._generator is None:
            if self.generator_dir is None:
                raise RuntimeError(f"{self.name} has no trained generator: call fit() first or pass checkpoint=PATH")
            from harness import catalog

            model, tokenizer = catalog.load(str(self.generator_dir), device=self.config.session.device)
            self._generator = ModelHandle(model, tokenizer, f"{self.name}-generator")
        return self._generator

    def judge(self) -> FrozenJudge:
        """The frozen judge `score` uses (verdicts cached in the harness cache)."""
        if self._judge is None:
            from harness.catalog import cache_dir

            s = self.config.session
            cache = cache_dir() / "cache.sqlite"
            self._judge = FrozenJudge(s.judge_model, cache, s.device, s.aggregate, self._judge_backend)
        return self._judge

    def rubrics(self, prompts: Sequence[Chat]) -> list[Rubric | None]:
        """One rubric per prompt from the trained generator (None where it wrote nothing parsable)."""
        ids = [chat_id(p) for p in prompts]
        todo = {i: list(p) for i, p in zip(ids, prompts, strict=True) if i not in self._rubrics}
        if todo:
            written = self.write_rubrics(list(todo.values()), list(todo))
            self._rubrics.update(zip(todo, written, strict=True))
        return [self._rubrics[i] for i in ids]

    def score(self, prompts: Sequence[Chat], responses: Sequence[str]) -> list[float]:
        """The frozen judge's score of each response under its prompt's rubric; NaN where there is no rubric."""
        rubrics = self.rubrics(prompts)
        scored = [i for i, r in enumerate(rubrics) if r is not None]
        items = [(list(prompts[i]), responses[i], rubrics[i]) for i in scored]
        out = [math.nan] * len(responses)
        for i, s in zip(scored, self.judge().score(items), strict=True):
            out[i] = s
        return out


def _check_options(options: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{where}.options: unknown key(s) {unknown}; allowed: {list(allowed)}")
