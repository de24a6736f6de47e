"""Phase checkpoints: an interrupted co-evolution run resumes after its last finished phase, as if never stopped."""

import json

import pytest
import torch
from safetensors.torch import load_file

from baselines.coevolution import checkpoint
from baselines.coevolution.session import Session
from harness.methods import FitContext, create_method

# Two cycles, four phases: EvoLM trains policy first, EvoRubric the generator (its pool needs criteria first).
CASES = {
    "evolm": {"cycles": 2},
    "evorubric": {"cycles": 2, "meta_model": "judge", "n_heldout": 0},
}
TIMINGS = {"step_seconds", "seconds"}  # wall times differ between runs; everything else must not


def fit(name, workdir):
    method = create_method(name, preset="test", **CASES[name])
    method.fit(FitContext(workdir=workdir))
    return method


def records(run_dir, log="items.jsonl"):
    rows = [json.loads(line) for line in (run_dir / log).read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def weights(method):
    return load_file(str(method.policy_dir / "model.safetensors"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_interrupted_run_resumes_after_its_last_phase_and_trains_as_the_uninterrupted_one(
    tmp_path, monkeypatch, name
):
    whole = fit(name, tmp_path / "whole")

    run_phase = Session.run_phase

    def killed_in_third_phase(self, phase, rows, reward_func):
        run_phase(self, phase, rows, reward_func)  # its steps reach the logs...
        if phase.index == 2:
            raise KeyboardInterrupt("killed")  # ...but the run dies before the phase's checkpoint

    monkeypatch.setattr(Session, "run_phase", killed_in_third_phase)
    with pytest.raises(KeyboardInterrupt):
        fit(name, tmp_path / "resumed")
    (run_dir,) = (tmp_path / "resumed").glob(f"{name}/*/run")
    assert checkpoint.latest(run_dir).name == "phase-checkpoint-0002"
    assert sum(r["kind"] == "step" for r in records(run_dir)) == 3  # the third phase's step is in the log

    monkeypatch.setattr(Session, "run_phase", run_phase)
    resumed = fit(name, tmp_path / "resumed")
    whole_dir = whole.policy_dir.parent.parent / "run"
    for log in ("items.jsonl", "telemetry.jsonl", "responses.jsonl"):
        assert records(run_dir, log) == records(whole_dir, log), log  # the killed phase's records were dropped
    assert all(torch.equal(a, b) for a, b in zip(weights(resumed).values(), weights(whole).values(), strict=True))
    for key in ("global_steps", "policy_steps", "generator_steps", "judge", "parse"):
        assert resumed.summary[key] == whole.summary[key], key
    assert resumed.summary["checkpoint_seconds"] > 0
    assert not list(run_dir.parent.glob("run.aborted-*"))
    assert checkpoint.latest(run_dir) is None  # a finished run keeps its models, not its optimizer states


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path, monkeypatch):
    def killed(self, phase, rows, reward_func):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Session, "run_phase", killed)
    with pytest.raises(KeyboardInterrupt):
        fit("evolm", tmp_path)
    monkeypatch.undo()
    method = fit("evolm", tmp_path)
    (aborted,) = (method.policy_dir.parent.parent).glob("run.aborted-*")  # kept, not mixed into the new run
    assert (aborted / "manifest.json").is_file() and method.summary["policy_steps"] == 2


def test_logs_are_cut_back_to_the_checkpoint_and_unknown_logs_emptied(tmp_path):
    (tmp_path / "items.jsonl").write_text('{"key": "a"}\n')

    class Stub:
        def save_pretrained(self, path):
            path.mkdir(parents=True, exist_ok=True)

    saved = checkpoint.save(tmp_path, 1, {"policy": (Stub(), Stub())}, {"x": 1})
    (tmp_path / "items.jsonl").write_text('{"key": "a"}\n{"key": "b"}\n')
    (tmp_path / "pairs.jsonl").write_text('{"key": "c"}\n')
    checkpoint.rewind_logs(tmp_path, saved)
    assert (tmp_path / "items.jsonl").read_text() == '{"key": "a"}\n'
    assert (tmp_path / "pairs.jsonl").read_text() == ""
    assert checkpoint.load_state(saved)["x"] == 1 and checkpoint.latest(tmp_path) == saved
    later = checkpoint.save(tmp_path, 2, {}, {})
    assert checkpoint.latest(tmp_path) == later and not saved.exists()  # only the newest is kept


def test_a_resumed_policy_run_goes_on_with_the_monitor_clock_of_the_attempts_before(tmp_path, monkeypatch):
    from harness.methods import PolicyContext
    from harness.train_prompts import training_prompts

    ctx = PolicyContext("tiny-random", [p.chat for p in training_prompts(4)], tmp_path, "test", steps=2)
    run_phase = Session.run_phase

    def killed_before_third_phase(self, phase, rows, reward_func):
        if phase.index == 2:
            raise KeyboardInterrupt("killed")
        run_phase(self, phase, rows, reward_func)

    monkeypatch.setattr(Session, "run_phase", killed_before_third_phase)
    with pytest.raises(KeyboardInterrupt):
        create_method("evolm", preset="test").train_policy(ctx)
    monkeypatch.setattr(Session, "run_phase", run_phase)
    load_state = checkpoint.load_state
    monkeypatch.setattr(checkpoint, "load_state", lambda path: {**load_state(path), "seconds": 1000.0})
    create_method("evolm", preset="test").train_policy(ctx)  # as if the first attempt had taken 1000 s

    rows = {r["step"]: r for r in map(json.loads, (tmp_path / "steps.jsonl").read_text().splitlines())}
    assert sorted(rows) == [0, 1, 2]
    assert rows[1]["wall_s"] < 1000 <= rows[2]["wall_s"]  # one clock over both attempts, not restarted at zero


def test_a_phase_leaves_the_model_forward_as_it_found_it(tmp_path):
    """TRL patches `model.forward` for every new GRPOTrainer; without undoing it, a run of many phases stacks
    one wrapper per phase (hundreds of phases would pass Python's recursion limit)."""
    from baselines.coevolution.grpo import GRPOSettings, StepRecorder, make_optimizer, run_grpo_phase
    from harness import catalog
    from harness.types import user_chat

    model, tokenizer = catalog.load("tiny-random")
    model.train()
    settings = GRPOSettings(prompts_per_step=1, num_generations=2, max_completion_length=4, learning_rate=1e-3)
    optimizer = make_optimizer(model, settings.learning_rate)
    rows = [{"prompt": user_chat("Say hi.")}]
    for phase in range(2):
        records = []
        run_grpo_phase(
            model, tokenizer, rows, lambda completions, **kw: [0.0, 1.0], 1, settings, optimizer,
            tmp_path / str(phase), seed=phase, recorder=StepRecorder(records.append),
        )  # fmt: skip
        assert len(records) == 1 and "forward" not in vars(model)  # the class's own forward again
