"""Downstream RL on tiny-random: `harness train`, `harness eval`, resumption, LoRA, the over-optimisation monitor."""

import json
from pathlib import Path

import pytest
from transformers import TrainerCallback

from harness.cli import main
from harness.methods import PolicyContext, available_methods, create_method
from harness.monitor import STEP_LOG, curve
from harness.rl import PRESETS, SUMMARY_FILE, TrainRequest, finished_policy, train, train_grpo
from harness.train_prompts import alpaca_instructions, probe_problems, prompt_texts, training_prompts


def _train_cli(runs, method, *extra):
    return main(["train", "--method", method, "--preset", "test", "--seed", "0", "--runs", str(runs), *extra])


@pytest.mark.parametrize("method", ["length", "random"])
def test_train_then_eval_every_task_and_rerun_skips(tmp_path, monkeypatch, capsys, method):
    monkeypatch.setenv("HARNESS_JUDGE", "hf:tiny-random")
    assert _train_cli(tmp_path, method) == 0
    run_dir = tmp_path / f"train-{method}-test-s0"
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["run"] == str(run_dir)
    assert finished_policy(run_dir) == run_dir / "policy"
    tasks = "ifeval_local,math_verified,healthbench_rubric"
    argv = ["eval", "--policy", str(run_dir), "--task", tasks, "--limit", "2", "--max-gen-toks", "8"]
    assert main([*argv, "--runs", str(tmp_path)]) == 0
    eval_dir = next(tmp_path.glob(f"eval-{run_dir.name}-*"))
    items = (eval_dir / "items.jsonl").read_text()
    keys = [json.loads(line)["key"] for line in items.splitlines()]
    assert sorted(keys) == sorted(f"{t}/{i}" for t in tasks.split(",") for i in range(2))
    assert "prompt_level_strict_acc" in capsys.readouterr().out
    assert main(["curve", str(run_dir), "--out", str(tmp_path / "curve.json")]) == 0
    written = json.loads((tmp_path / "curve.json").read_text())
    assert written["method"] == method and written["preset"] == "test" and written["curve"] == curve(run_dir)
    assert main(["curve", str(tmp_path / "nothing")]) != 0
    assert "nothing is not a training run" in capsys.readouterr().err

    # Running both commands again finds the work finished: nothing is retrained or re-evaluated.
    before = (run_dir / STEP_LOG).read_text(), (run_dir / "policy" / "model.safetensors").stat().st_mtime_ns
    assert _train_cli(tmp_path, method) == 0 and main([*argv, "--runs", str(tmp_path)]) == 0
    assert ((run_dir / STEP_LOG).read_text(), (run_dir / "policy" / "model.safetensors").stat().st_mtime_ns) == before
    assert len(json.loads((run_dir / "manifest.json").read_text())["resumed_at"]) == 1
    assert (eval_dir / "items.jsonl").read_text() == items


class CrashAfterCheckpoint(TrainerCallback):
    """Simulates a killed process right after the first checkpoint is written."""

    def on_save(self, args, state, control, **kwargs):
        raise KeyboardInterrupt(f"killed after checkpoint {state.global_step}")


def _ctx(tmp_path, steps=2, **options):
    prompts = [p.chat for p in training_prompts(PRESETS["test"].n_prompts)]
    return PolicyContext("tiny-random", prompts, tmp_path, "test", seed=0, steps=steps, options=options)


def test_grpo_resumes_from_last_checkpoint_and_monitor_logs_both_series(tmp_path):
    method = create_method("length")
    with pytest.raises(KeyboardInterrupt):
        train_grpo(method, _ctx(tmp_path, callbacks=[CrashAfterCheckpoint()]))
    assert (tmp_path / "checkpoints" / "checkpoint-1").is_dir() and finished_policy(tmp_path) is None
    log = tmp_path / "steps.jsonl"
    first = [json.loads(line) for line in log.read_text().splitlines()]
    first[-1]["wall_s"] = 1000.0  # as if the first attempt had taken 1000 s to reach its checkpoint
    log.write_text("".join(json.dumps(r) + "\n" for r in first))
    policy = train_grpo(method, _ctx(tmp_path))
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["resumed_from"].endswith("checkpoint-1") and summary["steps"] == 2
    assert (policy / "config.json").is_file() and not (tmp_path / "checkpoints").exists()
    rows = curve(tmp_path)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[0]["proxy_reward"] is None and all(isinstance(r["proxy_reward"], float) for r in rows[1:])
    assert all(0.0 <= r["gold_accuracy"] <= 1.0 for r in rows)  # test preset probes every step
    assert json.loads(log.read_text().splitlines()[-1])["wall_s"] >= 1000  # the clock went on from the checkpoint


def test_a_resumed_runs_wall_time_counts_the_attempts_before(tmp_path, monkeypatch):
    from dataclasses import replace

    import harness.rl

    real_train = harness.rl.train
    crash = lambda method, ctx: real_train(method, replace(ctx, options={"callbacks": [CrashAfterCheckpoint()]}))  # noqa: E731
    monkeypatch.setattr(harness.rl, "train", crash)
    with pytest.raises(KeyboardInterrupt):
        _train_cli(tmp_path, "length")
    run_dir = tmp_path / "train-length-test-s0"
    log = run_dir / STEP_LOG
    first = [json.loads(line) for line in log.read_text().splitlines()]
    first[-1]["wall_s"] = 1000.0  # as if the killed attempt had run 1000 s
    log.write_text("".join(json.dumps(r) + "\n" for r in first))
    monkeypatch.setattr(harness.rl, "train", real_train)
    assert _train_cli(tmp_path, "length") == 0
    wall = json.loads((run_dir / "manifest.json").read_text())["wall_s"]
    assert 1000 <= wall < 1000 + 600  # both attempts, not only the second
    assert main(["curve", str(run_dir), "--out", str(tmp_path / "curve.json")]) == 0
    assert json.loads((tmp_path / "curve.json").read_text())["train_wall_s"] == wall


def test_micro_batches_give_the_update_of_the_whole_batch(tmp_path, monkeypatch):
    from dataclasses import replace

    import torch
    from safetensors.torch import load_file

    from harness import catalog

    base = load_file(Path(catalog.resolve("tiny-random")) / "model.safetensors")
    deltas = {}
    for micro in (None, 1):  # the test preset's 4 completions at once, or one at a time (4 accumulated passes)
        monkeypatch.setitem(PRESETS, "test", replace(PRESETS["test"], micro_batch=micro))
        policy = train_grpo(create_method("length"), _ctx(tmp_path / f"micro-{micro}", steps=1))
        weights = load_file(policy / "model.safetensors")
        deltas[micro] = torch.cat([(weights[k] - base[k]).flatten() for k in sorted(base)])
    whole, micro = deltas[None], deltas[1]
    assert whole.abs().max() > 1e-3  # the step changed the weights
    # Adam's first update is lr * sign(gradient): equal wherever the gradient is not at rounding level.
    assert (whole - micro).abs().le(1e-6).float().mean() > 0.999


def test_micro_batch_must_divide_the_step():
    from harness.rl import batch_args

    expected = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2, "num_generations": 4}
    assert batch_args(4, 4, 8) == expected
    assert batch_args(4, 4, None)["gradient_accumulation_steps"] == 1
    with pytest.raises(ValueError, match="micro_batch must divide the 16 completions"):
        batch_args(4, 4, 3)


class Unscored:
    """A reward method that can score nothing (like expert_rubrics on a prompt without a rubric)."""

    name = "unscored"

    def fit(self, ctx):
        pass

    def score(self, prompts, responses):
        return [float("nan")] * len(responses)


def test_lora_policy_is_saved_merged_and_unscored_steps_are_still_logged(tmp_path):
    from transformers import AutoModelForCausalLM

    policy = train_grpo(Unscored(), _ctx(tmp_path, steps=1, lora=True))
    assert not (policy / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(policy)  # plain weights: lm-eval and vLLM can load them
    assert [(r["step"], r["proxy_reward"]) for r in curve(tmp_path)] == [(0, None), (1, None)]
    assert curve(tmp_path)[1]["gold_accuracy"] is not None  # the gold series survives an unscored step


class OwnTrainer:
    """A PolicyTrainingMethod (like EvoLM) that saves the base model as its policy."""

    name = "own"

    def fit(self, ctx):
        pass

    def score(self, prompts, responses):
        return [0.0] * len(responses)

    def train_policy(self, ctx):
        from harness import catalog

        self.steps = ctx.steps
        return catalog.resolve(ctx.base_model)


def test_methods_with_their_own_training_are_not_given_grpo(tmp_path):
    method = OwnTrainer()
    assert str(train(method, _ctx(tmp_path, steps=3))).endswith("tiny-random")
    assert method.steps == 3 and not (tmp_path / STEP_LOG).exists()


def test_training_prompts_are_disjoint_from_every_eval_prompt():
    from harness.data import load_healthbench
    from harness.splits import EVAL, fold
    from tasks.lmeval.hooks import MATH_EVAL_SEED, MATH_EVAL_SIZE, ifeval_file
    from tasks.math_verified import make_problems

    pool = training_prompts(PRESETS["gpu"].n_prompts)
    texts = prompt_texts(p.chat for p in pool)
    assert len({p.id for p in pool}) == len(pool)
    assert {p.source for p in pool} == {"alpaca", "ifeval_style", "math", "healthbench"}
    ifeval = {json.loads(line)["prompt"] for line in open(ifeval_file())}
    healthbench = prompt_texts(r.chat for r in load_healthbench() if fold(f"healthbench/{r.prompt_id}") == EVAL)
    math_eval = {p.question for p in make_problems(MATH_EVAL_SIZE, seed=MATH_EVAL_SEED, split="eval")}
    probe = {p.question for p in probe_problems(PRESETS["gpu"].probe_size, exclude=texts)}
    for name, evaluated in [("ifeval", ifeval), ("healthbench", healthbench), ("math", math_eval), ("probe", probe)]:
        assert not texts & evaluated, name
    assert not probe & math_eval
    # Not even near-copies: no AlpacaEval instruction's opening appears inside an IFEval or HealthBench prompt.
    evaluated_text = "\n".join(ifeval | prompt_texts(r.chat for r in load_healthbench()))
    assert not [a for a in alpaca_instructions() if a[:60] in evaluated_text]
    assert training_prompts(7) == pool[:7]  # a prefix of the pool: every preset shares its first prompts


def test_run_id_names_method_preset_seed_and_hashes_overrides(tmp_path, capsys):
    assert TrainRequest("length", "test", 3).run_id() == "train-length-test-s3"
    assert TrainRequest("length", "test", 3, steps=9).run_id().startswith("train-length-test-s3-")
    assert main(["train", "--method", "length", "--preset", "nope", "--runs", str(tmp_path)]) == 2
    assert "unknown RL preset 'nope'; choose one of test, cpu-smoke, cpu, gpu" in capsys.readouterr().err


# Factory arguments that put each built-in method on tiny-random; other installed methods run with their defaults.
TINY_METHOD_ARGS = {
    "bt_rm": ["base=tiny-random", "preset=test"],
    "expert_rubrics": ['judge="hf:tiny-random"'],
    "external_rubrics": ['serve="hf:tiny-random"', 'judge="hf:tiny-random"', "max_new_tokens=16"],
    "evolm": ["preset=test"],
    "evorubric": ["preset=test"],
}


@pytest.mark.slow
@pytest.mark.parametrize("method", [m.name for m in available_methods()])
def test_every_installed_method_trains_and_evaluates_on_tiny_random(tmp_path, monkeypatch, method):
    monkeypatch.setenv("HARNESS_JUDGE", "hf:tiny-random")
    extra = [a for arg in TINY_METHOD_ARGS.get(method, []) for a in ("--method-arg", arg)]
    assert _train_cli(tmp_path, method, *extra) == 0
    run_dir = next(tmp_path.glob(f"train-{method}-test-s0*"))
    assert finished_policy(run_dir) is not None
    tasks = "ifeval_local,math_verified,healthbench_rubric"
    argv = ["eval", "--policy", str(run_dir), "--task", tasks, "--limit", "1", "--max-gen-toks", "8"]
    assert main([*argv, "--runs", str(tmp_path)]) == 0


@pytest.mark.slow
def test_cpu_smoke_train_and_eval_on_smollm2(tmp_path, capsys):
    assert main(["train", "--method", "length", "--preset", "cpu-smoke", "--runs", str(tmp_path)]) == 0
    run_dir = tmp_path / "train-length-cpu-smoke-s0"
    rows = curve(run_dir)
    assert [r["step"] for r in rows] == list(range(PRESETS["cpu-smoke"].steps + 1))
    argv = ["eval", "--policy", str(run_dir), "--task", "ifeval_local", "--limit", "4", "--max-gen-toks", "64"]
    assert main([*argv, "--runs", str(tmp_path)]) == 0


@pytest.mark.gpu
def test_gpu_preset_trains_with_vllm(tmp_path):
    """Opt-in (--rungpu) on a CUDA machine with the `vllm` extra: not yet run on a GPU."""
    assert main(["train", "--method", "length", "--preset", "gpu", "--steps", "2", "--runs", str(tmp_path)]) == 0
    run_dir = next(tmp_path.glob("train-length-gpu-s0-*"))
    assert [r["step"] for r in curve(run_dir)] == [0, 1, 2]
    assert json.loads((run_dir / "manifest.json").read_text())["config"]["preset_settings"]["use_vllm"] is True
