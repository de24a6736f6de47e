"""EvoRubric's settings and presets.

Each verification stage has a switch (the ablations a study runs). The pool can start from HealthBench's
physician rubrics (`seed_expert`), which the generator then extends. Presets as for EvoLM: `test`
(tiny-random, seconds), `cpu` (SmolLM2-135M on short HealthBench train-fold prompts), `gpu` (documented budget).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from baselines.coevolution.grpo import GRPOSettings
from baselines.coevolution.overrides import preset_config
from baselines.coevolution.session import SessionConfig

DataSource = Literal["healthbench", "math"]
META_MODELS = ("policy", "judge")


@dataclass(frozen=True)
class EvoRubricConfig:
    """Schedule, verification switches and pool settings of EvoRubric, plus the shared session settings.

    Attributes:
        session: Models, GRPO settings per role (policy = Reasoner), rubric sampling.
        cycles: Generator-then-Reasoner cycles run by `fit`.
        steps_per_phase: GRPO steps per phase.
        meta_verifier: Stage 1 on/off; `meta_model` is "policy" (the trained model verifies, as in the paper)
            or "judge" (the frozen judge does); a criterion fails when a defect's P(yes) > `meta_threshold`.
        zero_variance: Stage 2 on/off.
        loo_consensus: Stage 3 on/off.
        pool_capacity: Criteria per prompt in the memory pool.
        evict_after: Consecutive flat Reasoner groups after which a generated pool criterion is dropped.
        seed_expert: Start pools from expert rubrics where prompts have one (HealthBench), keeping them.
        seed_max: Expert criteria seeded per prompt (largest |weight| first).
        data, n_prompts, n_heldout, eval_every: As in EvoLM.
    """

    session: SessionConfig
    cycles: int = 2
    steps_per_phase: int = 50
    meta_verifier: bool = True
    meta_model: str = "policy"
    meta_threshold: float = 0.5
    zero_variance: bool = True
    loo_consensus: bool = True
    pool_capacity: int = 8
    evict_after: int = 2
    seed_expert: bool = True
    seed_max: int = 6
    data: DataSource = "healthbench"
    n_prompts: int = 256
    n_heldout: int = 32
    eval_every: int = 1

    def __post_init__(self) -> None:
        if self.meta_model not in META_MODELS:
            raise ValueError(f"meta_model must be one of {META_MODELS}, got {self.meta_model!r}")
        if not 0.0 < self.meta_threshold < 1.0:
            raise ValueError(f"meta_threshold must be in (0, 1), got {self.meta_threshold}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the run config)."""
        return {**asdict(self), "session": self.session.to_dict()}


def _session(model: str, policy: GRPOSettings, generator: GRPOSettings, **kw: Any) -> SessionConfig:
    return SessionConfig(base_model=model, judge_model=model, policy=policy, generator=generator, **kw)


PRESETS: dict[str, EvoRubricConfig] = {
    "test": EvoRubricConfig(
        session=_session(
            "tiny-random",
            GRPOSettings(prompts_per_step=2, num_generations=2, max_completion_length=8, learning_rate=1e-3),
            GRPOSettings(prompts_per_step=2, num_generations=2, max_completion_length=16, learning_rate=1e-3),
            rubric_max_tokens=16,
            rubric_retries=0,
        ),
        cycles=1,
        steps_per_phase=1,
        pool_capacity=4,
        seed_max=2,
        n_prompts=2,
        n_heldout=1,
    ),
    "cpu": EvoRubricConfig(
        session=_session(
            "smollm2-135m",
            GRPOSettings(4, 4, max_completion_length=96, learning_rate=5e-6, micro_batch=4),
            GRPOSettings(4, 4, max_completion_length=128, learning_rate=5e-6, micro_batch=4),
            rubric_max_tokens=128,
        ),
        cycles=2,
        steps_per_phase=3,
        pool_capacity=6,
        seed_max=4,
        n_prompts=12,
        n_heldout=4,
    ),
    "gpu": EvoRubricConfig(
        session=_session(
            "smollm2-135m",
            GRPOSettings(8, 8, max_completion_length=512, learning_rate=1e-6, micro_batch=16),
            GRPOSettings(8, 8, max_completion_length=512, learning_rate=1e-6, micro_batch=16),
            device="cuda",
            rubric_max_tokens=512,
        ),
        cycles=10,
        steps_per_phase=50,
        pool_capacity=12,
        seed_max=12,
        n_prompts=1024,
        n_heldout=64,
    ),
}


def make_config(preset: str = "cpu", **overrides: Any) -> EvoRubricConfig:
    """A preset with keyword overrides (fields of `EvoRubricConfig` or of its `SessionConfig`)."""
    return preset_config("evorubric", PRESETS, preset, overrides)
