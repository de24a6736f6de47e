"""Downstream RL: train a policy with any reward method through TRL's GRPO, resumably, into the run store.

`train(method, ctx)` lets a method that owns its policy training (`PolicyTrainingMethod`: EvoLM, EvoRubric) do it,
and gives every other method `train_grpo`: TRL's GRPOTrainer with `as_reward_func(method)` as the only reward.
Every method of a comparison gets the same base model, prompts (`harness.train_prompts`) and step budget.

A training run directory holds `manifest.json`, `checkpoints/` (while training), `steps.jsonl` (one record per
step: proxy reward and gold probe accuracy, see `harness.monitor`), `train_summary.json` and the final `policy/`
(a plain transformers model, LoRA merged). Re-running resumes from the last checkpoint; a finished run is skipped.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from harness.methods import FitContext, PolicyContext, PolicyTrainingMethod, RewardMethod, as_reward_func
from harness.store import Run, atomic_write_text

POLICY_DIR = "policy"
SUMMARY_FILE = "train_summary.json"


@dataclass(frozen=True)
class GRPOPreset:
    """A GRPO budget. Each step samples `prompts_per_step` prompts x `num_generations` completions."""

    base_model: str
    steps: int
    prompts_per_step: int
    num_generations: int
    max_completion_length: int
    learning_rate: float
    n_prompts: int  # size of the training prompt pool
    save_every: int
    probe_size: int
    probe_every: int
    probe_max_new_tokens: int
    temperature: float = 1.0
    beta: float = 0.0  # KL coefficient; TRL's default 0 skips the reference model
    lora: bool = False
    lora_r: int = 16
    micro_batch: int | None = None  # completions per forward/backward pass (see `batch_args`); None: the whole step
    use_vllm: bool = False  # GPU only: TRL generates with vLLM in the training process ("colocate")
    bf16: bool = False  # GPU only: this CPU has no native bf16 and runs it ~5x slower than fp32


PRESETS = {
    # Seconds on tiny-random: checks the plumbing, learns nothing.
    "test": GRPOPreset("tiny-random", 2, 2, 2, 8, 1e-2, 8, 1, 2, 1, 8),
    # Minutes on 2 CPU cores: a few steps with short completions.
    "cpu-smoke": GRPOPreset("smollm2-135m", 4, 2, 4, 32, 1e-5, 12, 2, 8, 2, 48),
    # The largest run that is practical on 2 CPU cores (docs/downstream.md). Its pool holds HealthBench prompts of up
    # to ~960 tokens: a whole step of 16 such rows needs ~40 GB of activations, so it back-propagates 4 at a time.
    "cpu": GRPOPreset("smollm2-135m", 48, 4, 4, 64, 5e-6, 192, 8, 24, 8, 64, micro_batch=4),
    # One GPU: vLLM generation, bf16, longer completions; same base model as the CPU presets.
    "gpu": GRPOPreset("smollm2-135m", 400, 16, 8, 384, 1e-6, 960, 50, 128, 25, 256, use_vllm=True, bf16=True),
}


def get_preset(name: str) -> GRPOPreset:
    """The preset called `name`, or a ValueError listing the presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown RL preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def policy_path(run_dir: Path) -> Path | None:
    """The finished policy of a training run, or None while it is unfinished."""
    path = Path(run_dir) / POLICY_DIR
    return path if (path / "config.json").is_file() and (Path(run_dir) / SUMMARY_FILE).is_file() else None


def finished_policy(run_dir: Path) -> Path | None:
    """The policy a finished training run recorded in its manifest (GRPO or a method's own), else None."""
    manifest = Path(run_dir) / "manifest.json"
    recorded = json.loads(manifest.read_text()).get("policy") if manifest.is_file() else None
    return Path(recorded) if recorded and (Path(recorded) / "config.json").is_file() else None


def batch_args(prompts_per_step: int, num_generations: int, micro_batch: int | None = None) -> dict[str, int]:
    """GRPOConfig's batch arguments: one generation batch per optimizer step, back-propagated in micro-batches.

    A step generates `prompts_per_step` x `num_generations` completions and back-propagates them `micro_batch`
    at a time (gradient accumulation). The update is the same (TRL normalises the loss over the whole generation
    batch); only the activation memory shrinks, by the number of micro-batches. None: the whole batch at once.
    """
    total = prompts_per_step * num_generations
    micro = total if micro_batch is None else min(micro_batch, total)
    if micro < 1 or total % micro:
        raise ValueError(f"micro_batch must divide the {total} completions of a step, got {micro_batch}")
    return {
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": total // micro,
        "num_generations": num_generations,
    }


def _grpo_config(preset: GRPOPreset, ctx: PolicyContext, cuda: bool) -> Any:
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(Path(ctx.output_dir) / "checkpoints"),
        max_steps=ctx.steps,
        **batch_args(preset.prompts_per_step, preset.num_generations, preset.micro_batch),
        max_completion_length=preset.max_completion_length,
        learning_rate=preset.learning_rate,
        temperature=preset.temperature,
        beta=preset.beta,
        seed=ctx.seed,
        data_seed=ctx.seed,
        use_cpu=not cuda,
        bf16=preset.bf16 and cuda,  # use_cpu alone turns bf16 on, which is ~5x slower on this CPU
        activation_checkpointing=cuda,  # GRPOConfig defaults it on; off on CPU, where the `cpu` runs were measured
        # (reports/bench/backward.json: on CPU it would cut a long micro-batch's backward memory 2.5x)
        use_vllm=preset.use_vllm and cuda,
        vllm_mode="colocate",
        logging_steps=1,
        save_strategy="steps",
        save_steps=preset.save_every,
        save_total_limit=1,
        report_to=[],
        disable_tqdm=False,
        dataloader_pin_memory=False,
    )


def _peft_config(preset: GRPOPreset, lora: bool) -> Any:
    if not lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=preset.lora_r, lora_alpha=2 * preset.lora_r, target_modules="all-linear", task_type="CAUSAL_LM")


def probe_set(ctx: PolicyContext, preset: GRPOPreset) -> list[Any]:
    """The over-optimisation monitor's probe: `ctx.options["probe"]`, else the preset's size of held-out problems."""
    from harness.train_prompts import probe_problems, prompt_texts

    probe = ctx.options.get("probe")
    if probe is None:
        probe = probe_problems(preset.probe_size, exclude=prompt_texts(ctx.prompts))
    overlap = {p.question for p in probe} & prompt_texts(ctx.prompts)
    if overlap:
        raise ValueError(f"probe problems overlap the training prompts: {sorted(overlap)[:3]}")
    return list(probe)


def train_grpo(method: RewardMethod, ctx: PolicyContext) -> Path:
    """Train a policy on `ctx.prompts` with GRPO and `method` as the reward; returns the saved policy directory.

    Options read from `ctx.options`: `lora` (bool, default: the preset's), `probe` (math problems for the
    over-optimisation monitor, default: `harness.train_prompts.probe_problems`), `callbacks` (extra
    `transformers.TrainerCallback`s, e.g. for logging services).
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOTrainer

    from harness import catalog
    from harness.monitor import OveroptimisationMonitor

    out = Path(ctx.output_dir)
    if (done := policy_path(out)) is not None:
        return done
    preset = get_preset(ctx.preset)
    cuda = torch.cuda.is_available()
    set_seed(ctx.seed)
    path = catalog.resolve(ctx.base_model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = torch.bfloat16 if preset.bf16 and cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    monitor = OveroptimisationMonitor(
        out, method.name, probe_set(ctx, preset), preset.probe_every, preset.probe_max_new_tokens
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[as_reward_func(method)],
        args=_grpo_config(preset, ctx, cuda),
        train_dataset=Dataset.from_list([{"prompt": list(chat)} for chat in ctx.prompts]),
        processing_class=tokenizer,
        peft_config=_peft_config(preset, bool(ctx.options.get("lora", preset.lora))),
        callbacks=[monitor, *ctx.options.get("callbacks", ())],
    )
    checkpoints = out / "checkpoints"
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    monitor.start_clock(monitor.wall_at(int(Path(last).name.split("-")[-1])) if last else 0.0)
    start = time.time()
    trainer.train(resume_from_checkpoint=last)
    return _save_policy(trainer, tokenizer, out, {"resumed_from": last, "train_wall_s": time.time() - start})


def _save_policy(trainer: Any, tokenizer: Any, out: Path, info: dict[str, Any]) -> Path:
    """Save the final policy (LoRA merged) atomically, then the summary that marks the run finished."""
    model = trainer.model
    if hasattr(model, "merge_and_unload"):  # a PEFT model: lm-eval and vLLM want plain weights
        model = model.merge_and_unload()
    tmp = Path(tempfile.mkdtemp(prefix=".policy-", dir=out))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    final = out / POLICY_DIR
    shutil.rmtree(final, ignore_errors=True)  # a policy without a summary is from a killed save
    tmp.rename(final)
    summary = {**info, "steps": trainer.state.global_step, "log_history": trainer.state.log_history}
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1))
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # optimizer states are 3x the model; no longer needed
    return final


def train(method: RewardMethod, ctx: PolicyContext) -> Path:
    """Train a policy with `method`: its own `train_policy` if it has one, else GRPO with its reward."""
    if isinstance(method, PolicyTrainingMethod):
        return Path(method.train_policy(ctx))
    return train_grpo(method, ctx)


@dataclass(frozen=True)
class TrainRequest:
    """Everything that identifies a training run; two equal requests are the same run."""

    method: str
    preset: str
    seed: int = 0
    method_kwargs: tuple[tuple[str, Any], ...] = ()
    base_model: str | None = None
    steps: int | None = None
    lora: bool | None = None

    def run_id(self) -> str:
        """`train-<method>-<preset>-s<seed>`, plus a hash of any non-default setting."""
        from harness.cache import content_key

        base = f"train-{self.method}-{self.preset}-s{self.seed}"
        overrides = replace(self, seed=0)
        if overrides == TrainRequest(self.method, self.preset):
            return base
        return f"{base}-{content_key('train-request', request=asdict(overrides))[:8]}"


def train_run(request: TrainRequest, runs_root: str | Path) -> Run:
    """Fit the method, then train a policy for it in the run store; resumes or skips as the run's state says."""
    from harness.methods import create_method
    from harness.monitor import logged_seconds
    from harness.train_prompts import training_prompts

    preset = get_preset(request.preset)
    base_model = request.base_model or preset.base_model
    steps = request.steps or preset.steps
    prompts = training_prompts(preset.n_prompts)
    config = {"kind": "policy-train", **asdict(request), "preset_settings": asdict(preset), "base_model": base_model}
    config["prompt_ids"] = [p.id for p in prompts]
    run = Run(runs_root, request.run_id(), json.loads(json.dumps(config)))
    if finished_policy(run.dir) is not None:
        return run
    method = create_method(request.method, **dict(request.method_kwargs))
    if not isinstance(method, PolicyTrainingMethod):  # co-evolving methods train inside train_policy instead
        method.fit(FitContext(workdir=Path(runs_root) / "_fit", seed=request.seed))
    options = {} if request.lora is None else {"lora": request.lora}
    ctx = PolicyContext(base_model, [p.chat for p in prompts], run.dir, request.preset, request.seed, steps, options)
    before = logged_seconds(run.dir)  # the attempts killed before this one, up to their last logged step
    start = time.time()
    policy = train(method, ctx)
    run.note(policy=str(policy), wall_s=before + time.time() - start)
    return run
