"""One GRPO phase on TRL: a fresh `GRPOTrainer` over a model that persists across phases, with a shared optimizer.

A phase trains one role for a fixed number of steps. The model object and its AdamW optimizer outlive the
phase, so alternating roles continue one optimisation (as in EvoLM's single-model mode, where policy and rubric
actors share one learner); a two-model run keeps one optimizer per model. Each step's record (the reward
function's telemetry, TRL's logged metrics and the step's wall time) goes to a callback, which writes it to the
run store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from harness.rl import batch_args

# TRL metrics copied into each step record (TRL logs many more; these are the ones reports use).
TRL_KEYS = ("loss", "reward", "reward_std", "frac_reward_zero_std", "kl", "entropy", "completions/mean_length")


@dataclass(frozen=True)
class GRPOSettings:
    """Batch shape and optimisation of one role's GRPO phases."""

    prompts_per_step: int
    num_generations: int
    max_completion_length: int
    learning_rate: float
    temperature: float = 1.0
    beta: float = 0.0
    micro_batch: int | None = None  # completions per forward/backward pass (harness.rl.batch_args)

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError(f"GRPO needs num_generations >= 2 (a group to compare), got {self.num_generations}")
        if self.prompts_per_step < 1 or self.max_completion_length < 1:
            raise ValueError("prompts_per_step and max_completion_length must be >= 1")
        batch_args(self.prompts_per_step, self.num_generations, self.micro_batch)  # raises if it does not divide

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for run configs."""
        return asdict(self)


def make_optimizer(model: Any, learning_rate: float) -> tuple[Any, Any]:
    """AdamW over the trainable parameters with a constant schedule (EvoLM's default `constant` scheduler)."""
    import torch
    from transformers import get_constant_schedule

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    return optimizer, get_constant_schedule(optimizer)


class StepRecorder(TrainerCallback):
    """Collects one record per optimizer step and hands it to `emit` once TRL has logged the step's metrics.

    The reward function adds its telemetry with `note(...)` while the step runs; `on_step_end` adds the step's
    wall time, and `on_log` (which the trainer calls right after, with `logging_steps=1`) adds TRL's metrics.
    """

    def __init__(self, emit: Callable[[dict[str, Any]], None]) -> None:
        self.emit = emit
        self.pending: dict[str, Any] = {}
        self.ready: dict[str, Any] | None = None
        self.started = time.perf_counter()

    def note(self, **fields: Any) -> None:
        """Add fields to the current step's record."""
        self.pending.update(fields)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:  # noqa: D102
        self.started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:  # noqa: D102
        self._flush()
        self.ready = {**self.pending, "phase_step": state.global_step}
        self.ready["step_seconds"] = time.perf_counter() - self.started
        self.pending = {}

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:  # noqa: D102
        if self.ready is not None:
            self.ready["trl"] = {k: logs[k] for k in TRL_KEYS if logs and k in logs}
            self._flush()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:  # noqa: D102
        self._flush()

    def _flush(self) -> None:
        if self.ready is not None:
            record, self.ready = self.ready, None
            self.emit(record)


def grpo_config(settings: GRPOSettings, steps: int, model: Any, workdir: Path, seed: int) -> Any:
    """TRL's `GRPOConfig` for one phase: one generation batch per optimizer step, no checkpoints, CPU-safe."""
    from trl import GRPOConfig

    on_cpu = model.device.type == "cpu"
    return GRPOConfig(
        output_dir=str(workdir),
        **batch_args(settings.prompts_per_step, settings.num_generations, settings.micro_batch),
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        beta=settings.beta,
        max_steps=steps,
        learning_rate=settings.learning_rate,  # unused: the shared optimizer carries the rate
        use_cpu=on_cpu,
        bf16=not on_cpu and str(model.dtype) == "torch.bfloat16",  # use_cpu alone turns bf16 on: 5x slower here
        activation_checkpointing=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        seed=seed,
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )


def run_grpo_phase(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    reward_func: Callable[..., list[float | None]],
    steps: int,
    settings: GRPOSettings,
    optimizer: tuple[Any, Any],
    workdir: Path,
    seed: int,
    recorder: StepRecorder,
    callbacks: Sequence[TrainerCallback] = (),
) -> list[dict[str, Any]]:
    """Run `steps` GRPO steps on `rows` (dicts with a chat `prompt` and extra columns for the reward function).

    `callbacks` are added to the recorder (the over-optimisation monitor in policy phases). Returns TRL's log
    history of the phase.
    """
    from datasets import Dataset
    from trl import GRPOTrainer

    if not rows:
        raise ValueError("a GRPO phase needs at least one prompt row")
    # TRL draws `prompts_per_step` distinct prompts per step; repeat the rows when there are fewer.
    rows = [rows[i % len(rows)] for i in range(max(len(rows), settings.prompts_per_step))]
    patched_before = vars(model).get("forward")  # None: the model's class forward
    try:
        trainer = GRPOTrainer(  # patches model.forward with TRL's fused LM head
            model=model,
            reward_funcs=[reward_func],
            args=grpo_config(settings, steps, model, workdir, seed),
            train_dataset=Dataset.from_list(list(rows)),
            processing_class=tokenizer,
            callbacks=[recorder, *callbacks],
            optimizers=optimizer,
        )
        trainer.train()
    finally:  # undo the patch, or every phase would wrap the previous phase's wrapper
        if patched_before is None:
            vars(model).pop("forward", None)
        else:
            model.forward = patched_before
    return list(trainer.state.log_history)
