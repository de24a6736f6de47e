"""EvoLM's settings and presets.

Defaults follow EvoLM's launcher (stellalisy/EvoLM `scripts/`): alternation every 50 steps (`alt/alt50`), replay
ages 20-100 (`replay_buffer_gap/gap20_100`), binary pairwise reward with optional margin
(`rubric_reward_use_margin`) and format blend (`rubric_format_reward_weight`), rubric temperature 0.6 (also for
the generator's GRPO rollouts), policy temperature 1.0, constant learning rate. Presets:
- `test`: tiny-random everywhere; seconds; exercises every code path, learns nothing.
- `cpu`: the embedded SmolLM2-135M as policy, generator and (a separate, frozen copy) judge; 2 cycles of 3 steps
  on 16 math prompts, GRPO back-propagated 4 completions at a time. 15 min 39 s on a quiet 2-core machine, peak
  RSS 8.1 GB (whole-step backward passes: 16 min 54 s, 18.1 GB; docs/coevolution.md).
- `gpu`: a GPU budget close to EvoLM's per-phase shape (8 prompts x 8 samples, 50-step phases, ages 20-100);
  set `base_model`/`judge_model` to larger models where they are available.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from baselines.coevolution.grpo import GRPOSettings
from baselines.coevolution.overrides import preset_config
from baselines.coevolution.session import SessionConfig

Pairing = Literal["temporal", "rubric_conditioned", "mixed"]
DataSource = Literal["math", "healthbench"]
PAIRINGS = ("temporal", "rubric_conditioned", "mixed")
# EvoLM samples rubrics at 0.6 (its rubric actor's temperature) and policy rollouts at 1.0.
RUBRIC_TEMPERATURE = 0.6


@dataclass(frozen=True)
class EvoLMConfig:
    """Schedule, pairing and reward shaping of EvoLM, plus the shared session settings.

    Attributes:
        session: Models, GRPO settings per role, rubric sampling.
        cycles: Policy-then-generator cycles run by `fit`.
        steps_per_phase: GRPO steps per phase (K).
        age_window: `(a, b)`: the older response of a temporal pair is `a..b` policy steps old.
        window_fallback: Relax the window as EvoLM's replay buffer does when no response lies in it.
        pairing: "temporal" (current vs own older response), "rubric_conditioned" (answer with the generator's
            rubric in context vs question-only answer; EvoLM's `rubric` data provider) or "mixed" (alternating).
        margin_weight: Blend of the binary ranking reward with the score margin (1 = pure margin).
        format_weight: Blend with a format reward (1 for a parsable rubric), EvoLM's format weight.
        data: Default prompt source when the fit context gives no items.
        n_prompts: Training prompts drawn from `data`.
        n_heldout: Held-out preference items for the utility telemetry.
        eval_every: Evaluate held-out utility after every `eval_every`-th generator phase (and before training).
    """

    session: SessionConfig
    cycles: int = 2
    steps_per_phase: int = 50
    age_window: tuple[int, int] = (20, 100)
    window_fallback: bool = True
    pairing: Pairing = "temporal"
    margin_weight: float = 0.0
    format_weight: float = 0.0
    data: DataSource = "math"
    n_prompts: int = 256
    n_heldout: int = 32
    eval_every: int = 1

    def __post_init__(self) -> None:
        if self.pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS}, got {self.pairing!r}")
        for name in ("margin_weight", "format_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.age_window) != 2:
            raise ValueError(f"age_window must be (low, high), got {self.age_window!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the run config)."""
        return {**asdict(self), "session": self.session.to_dict()}


def _rubric_grpo(
    prompts: int, generations: int, length: int, learning_rate: float, micro_batch: int | None = None
) -> GRPOSettings:
    """GRPO settings of the generator role, sampling at EvoLM's rubric temperature."""
    return GRPOSettings(prompts, generations, length, learning_rate, RUBRIC_TEMPERATURE, micro_batch=micro_batch)


def _session(model: str, policy: GRPOSettings, generator: GRPOSettings, **kw: Any) -> SessionConfig:
    return SessionConfig(base_model=model, judge_model=model, policy=policy, generator=generator, **kw)


PRESETS: dict[str, EvoLMConfig] = {
    "test": EvoLMConfig(
        session=_session(
            "tiny-random",
            GRPOSettings(prompts_per_step=2, num_generations=2, max_completion_length=8, learning_rate=1e-3),
            _rubric_grpo(2, 2, 16, 1e-3, micro_batch=2),  # exercises gradient accumulation
            rubric_max_tokens=16,
            rubric_retries=0,
        ),
        cycles=1,
        steps_per_phase=1,
        age_window=(0, 1),
        n_prompts=4,
        n_heldout=2,
    ),
    "cpu": EvoLMConfig(
        session=_session(
            "smollm2-135m",
            GRPOSettings(4, 4, max_completion_length=64, learning_rate=5e-6, micro_batch=4),
            _rubric_grpo(4, 4, 128, 5e-6, micro_batch=4),
            rubric_max_tokens=128,
            rubric_retries=2,  # SmolLM2-135M writes a parsable rubric about one time in three
        ),
        cycles=2,
        steps_per_phase=3,
        age_window=(1, 3),
        n_prompts=16,
        n_heldout=8,
    ),
    "gpu": EvoLMConfig(
        session=_session(
            "smollm2-135m",
            GRPOSettings(8, 8, max_completion_length=256, learning_rate=1e-6, micro_batch=16),
            _rubric_grpo(8, 8, 512, 1e-6, micro_batch=16),
            device="cuda",
            rubric_max_tokens=512,
        ),
        cycles=10,
        steps_per_phase=50,
        age_window=(20, 100),
        n_prompts=1024,
        n_heldout=64,
    ),
}


def make_config(preset: str = "cpu", **overrides: Any) -> EvoLMConfig:
    """A preset with keyword overrides (fields of `EvoLMConfig` or of its `SessionConfig`)."""
    return preset_config("evolm", PRESETS, preset, overrides)
