"""EvoLM and the shared co-evolution machinery: schedule, age windows, rewards, frozen judge, end to end."""

import json
import math
import random

import pytest
import torch

from baselines.coevolution.audit import ContrastPair, answer_oracle, default_windows, history_pairs, label_noise
from baselines.coevolution.data import Prompt, wrong_answer
from baselines.coevolution.history import AgeWindow, ResponseHistory
from baselines.coevolution.judging import FrozenJudge, weights_digest
from baselines.coevolution.schedule import alternation, policy_budget
from baselines.coevolution.telemetry import open_run
from baselines.evolm import EvoLM, make_config
from baselines.evolm.rewards import generator_reward_func, policy_reward_func
from baselines.evolm.trainer import EvoLMTrainer
from baselines.evolm.utility import Pair, generator_reward, ranking_reward
from harness.methods import FitContext, PolicyContext, create_method
from harness.monitor import curve
from harness.rubric import ParseTally
from harness.types import Criterion, PreferenceItem, Rubric, user_chat

RUBRIC = Rubric((Criterion("States the final number", 2.0), Criterion("Shows the working", 1.0)))
RUBRIC_JSON = '[{"criterion": "States the final number", "weight": 0.6}, {"criterion": "Is polite", "weight": 0.4}]'


def items(n=8):
    return [
        PreferenceItem(f"q{i}", tuple(user_chat(f"What is {i} plus {i}?")), (f"It is {2 * i}.",), (f"{2 * i + 1}",))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def judge(tiny_backend):
    return FrozenJudge("tiny-random", backend=tiny_backend)


# ------------------------------------------------------------------------------------------------ schedule
def test_alternation_runs_policy_then_generator_every_cycle():
    phases = alternation(3, 2)
    assert [p.role for p in phases] == ["policy", "generator"] * 3
    assert [p.cycle for p in phases] == [0, 0, 1, 1, 2, 2]
    assert [p.index for p in phases] == list(range(6)) and all(p.steps == 2 for p in phases)
    assert [p.role for p in alternation(1, 1, first="generator")] == ["generator", "policy"]
    with pytest.raises(ValueError, match="cycles"):
        alternation(0, 1)


@pytest.mark.parametrize("budget,k", [(1, 3), (5, 2), (6, 3), (7, 50)])
def test_policy_budget_spends_exactly_the_policy_steps_and_ends_on_a_policy_phase(budget, k):
    phases = policy_budget(budget, k)
    assert sum(p.steps for p in phases if p.role == "policy") == budget
    assert phases[-1].role == "policy"
    assert all(p.steps <= k for p in phases)
    roles = [p.role for p in phases]
    assert all(a != b for a, b in zip(roles, roles[1:], strict=False)), "roles must alternate"


# --------------------------------------------------------------------------------------------- age windows
def test_age_window_sampling_only_returns_responses_of_the_right_age(tmp_path):
    history = ResponseHistory(tmp_path / "responses.jsonl")
    for step in range(1, 11):
        history.add("p", step, f"answer from step {step}")
    rng = random.Random(0)
    window = AgeWindow(2, 4)
    ages = set()
    for _ in range(200):
        entry, how = history.sample_in_window("p", 10, window, rng)
        assert how == "window"
        ages.add(10 - entry.step)
    assert ages == {2, 3, 4}
    assert history.sample_in_window("other", 10, window, rng) == (None, "none")


def test_age_window_fallbacks_relax_the_maximum_then_the_minimum_but_never_to_age_zero(tmp_path):
    history = ResponseHistory(tmp_path / "responses.jsonl")
    history.add("p", 1, "old")
    history.add("p", 9, "recent")
    history.add("p", 10, "current")
    rng = random.Random(0)
    assert history.sample_in_window("p", 10, AgeWindow(3, 5), rng)[0] is None
    entry, how = history.sample_in_window("p", 10, AgeWindow(3, 5), rng, fallback=True)
    assert (entry.response, how) == ("old", "relaxed_max_age")
    entry, how = history.sample_in_window("p", 10, AgeWindow(20, 30), rng, fallback=True)
    assert how == "relaxed_min_age" and entry.step < 10
    with pytest.raises(ValueError, match="low <= high"):
        AgeWindow(5, 2)


def test_history_is_kept_in_the_run_store_and_survives_reopening(tmp_path):
    history = ResponseHistory(tmp_path / "responses.jsonl")
    history.add("p", 3, "a", reward=0.5)
    history.add("p", 3, "b")
    reopened = ResponseHistory(tmp_path / "responses.jsonl")
    assert [(e.step, e.response, e.reward) for e in reopened.entries("p")] == [(3, "a", 0.5), (3, "b", None)]
    assert [e.response for e in reopened.latest_group("p")] == ["a", "b"]


# ------------------------------------------------------------------------------------------------- rewards
def test_ranking_reward_is_binary_with_an_optional_margin_blend():
    assert ranking_reward(0.8, 0.2) == 1.0
    assert ranking_reward(0.2, 0.8) == 0.0
    assert ranking_reward(0.5, 0.5) == 0.0  # a tie earns nothing, as in EvoLM
    assert ranking_reward(0.8, 0.2, margin_weight=0.5) == pytest.approx(0.5 + 0.5 * 0.6)
    assert ranking_reward(0.2, 0.8, margin_weight=1.0) == pytest.approx(-0.6)
    assert math.isnan(ranking_reward(math.nan, 0.1))


def test_generator_reward_scores_failures_zero_and_unscorable_none():
    assert generator_reward(None, [1.0]) == 0.0
    assert generator_reward(RUBRIC, [1.0, 0.0, math.nan]) == 0.5
    assert generator_reward(RUBRIC, [math.nan]) is None
    assert generator_reward(RUBRIC, [0.0], format_weight=0.25) == 0.25


def test_policy_reward_scores_under_the_rubric_and_stores_every_response_with_its_step(tmp_path, judge):
    history = ResponseHistory(tmp_path / "responses.jsonl")
    chats = {"a": user_chat("What is 2 plus 2?"), "b": user_chat("Name a colour.")}
    notes = {}
    reward = policy_reward_func(chats, {"a": RUBRIC, "b": None}, judge, history, lambda: 7, notes.update)
    completions = [[{"role": "assistant", "content": t}] for t in ("4", "It is 4.", "red", "blue")]
    rewards = reward(prompts=None, completions=completions, prompt_id=["a", "a", "b", "b"])
    assert all(0.0 <= r <= 1.0 for r in rewards[:2]) and rewards[2:] == [None, None]
    assert [(e.step, e.response) for e in history.entries("a")] == [(7, "4"), (7, "It is 4.")]
    assert len(history.entries("b")) == 2 and notes["without_rubric"] == 2


def test_generator_reward_is_the_discriminative_utility_on_the_pair(judge):
    pair = Pair("t/a", "a", tuple(user_chat("What is 2 plus 2?")), "2 plus 2 is 4.", "5", "temporal", 4, 2, "window")
    total, notes = ParseTally(), {}
    reward = generator_reward_func({"t/a": pair}, judge, total, 0.0, 0.0, notes.update)
    completions = [[{"role": "assistant", "content": t}] for t in (RUBRIC_JSON, "no rubric here")]
    rewards = reward(prompts=None, completions=completions, pair_key=["t/a", "t/a"])
    chat = list(pair.chat)
    rubric = Rubric((Criterion("States the final number", 0.6), Criterion("Is polite", 0.4)))
    preferred, other = judge.score([(chat, pair.preferred, rubric), (chat, pair.other, rubric)])
    assert rewards == [ranking_reward(preferred, other), 0.0]
    assert (total.ok, total.failed) == (1, 1)
    assert notes["rubrics"]["parse"]["failed"] == 1 and notes["rubrics"]["n_rubrics"] == 1.0


# ---------------------------------------------------------------------------------------------- the judge
def test_frozen_judge_detects_any_change_to_its_weights(tiny_backend):
    judge = FrozenJudge("tiny-random", backend=tiny_backend)
    judge.assert_unchanged()
    param = next(judge.model.parameters())
    saved = param.detach().clone()  # the backend is shared by the session: restore it bit for bit
    with torch.no_grad():
        param.add_(1.0)
    try:
        with pytest.raises(AssertionError, match="frozen judge"):
            judge.assert_unchanged()
    finally:
        with torch.no_grad():
            param.copy_(saved)
    assert weights_digest(judge.model) == judge.digest


class FixedRubricTrainer(EvoLMTrainer):
    """A fake generator: every policy-phase prompt gets the same rubric, so rewards reach the policy."""

    def phase_rubrics(self, phase, prompts):
        return [RUBRIC for _ in prompts]


def test_training_moves_the_policy_but_never_the_judge(tmp_path, tiny_backend):
    config = make_config("test", cycles=1)
    run = open_run(tmp_path, "run", config.to_dict())
    prompts = [Prompt(f"p{i}", tuple(user_chat(f"Add {i} and {i}."))) for i in range(4)]
    trainer = FixedRubricTrainer(config, run, prompts, judge_backend=tiny_backend)
    judge_before = weights_digest(trainer.session.judge.model)
    policy_before = weights_digest(trainer.session.policy.model)
    trainer.train(policy_budget(1, 1))
    assert weights_digest(trainer.session.judge.model) == judge_before
    assert weights_digest(trainer.session.policy.model) != policy_before
    assert not any(p.requires_grad for p in trainer.session.judge.model.parameters())


def test_mixed_pairing_builds_temporal_and_rubric_conditioned_pairs(tmp_path, tiny_backend):
    config = make_config("test", pairing="mixed", generator={"prompts_per_step": 4})
    run = open_run(tmp_path, "run", config.to_dict())
    prompts = [Prompt(f"p{i}", tuple(user_chat(f"Add {i} and {i}."))) for i in range(4)]
    trainer = FixedRubricTrainer(config, run, prompts, judge_backend=tiny_backend)
    for p in prompts:
        trainer.session.history.add(p.id, 1, f"old answer to {p.id}")
    trainer.session.policy_step = 2
    pairs = trainer.build_pairs(alternation(1, 1)[1])
    assert sorted(p.kind for p in pairs) == ["rubric_conditioned"] * 2 + ["temporal"] * 2
    temporal = [p for p in pairs if p.kind == "temporal"]
    assert all(p.other.startswith("old answer") and (p.new_step, p.old_step) == (2, 1) for p in temporal)
    conditioned = [p for p in pairs if p.kind == "rubric_conditioned"]
    assert {p.prompt_id for p in conditioned}.isdisjoint({p.prompt_id for p in temporal})


# ------------------------------------------------------------------------------------------- label noise
def test_label_noise_counts_wrong_newer_labels_per_age_window():
    answers = {"p": "4"}
    oracle = answer_oracle(answers, lambda response, answer: response.strip() == answer)
    pairs = [
        ContrastPair("p", "4", "5", 3, 2),  # age 1, right
        ContrastPair("p", "5", "4", 3, 2),  # age 1, wrong
        ContrastPair("p", "4", "4", 5, 2),  # age 3, tie
        ContrastPair("p", "5", "4", 6, 2),  # age 4, wrong
        ContrastPair("q", "5", "4", 6, 5),  # no answer: unknown
    ]
    table = label_noise(pairs, oracle, [AgeWindow(1, 1), AgeWindow(2, 4)])
    assert table["1-1"] == {
        "n": 3,
        "right": 1,
        "wrong": 1,
        "tie": 0,
        "unknown": 1,
        "wrong_rate": 0.5,
        "wrong_rate_decided": 0.5,
    }
    assert table["2-4"]["wrong_rate"] == 0.5 and table["2-4"]["wrong_rate_decided"] == 1.0
    assert [w.label() for w in default_windows(10)] == ["1-1", "2-3", "4-7", "8-10"]


def test_history_pairs_pair_every_response_with_every_older_one(tmp_path):
    history = ResponseHistory(tmp_path / "r.jsonl")
    for step, text in [(1, "a"), (1, "b"), (2, "c"), (4, "d")]:
        history.add("p", step, text)
    pairs = history_pairs(history)
    assert sorted((p.new, p.old, p.age) for p in pairs) == sorted(
        [("c", "a", 1), ("c", "b", 1), ("d", "a", 3), ("d", "b", 3), ("d", "c", 2)]
    )


def test_wrong_answer_is_always_different():
    assert all(wrong_answer(a) != a for a in ("0", "12", "-3", "3/4", "2.5", "x"))


# ---------------------------------------------------------------------------------------------- end to end
def test_fit_then_score_then_train_policy_end_to_end(tmp_path):
    method = create_method("evolm", preset="test")
    assert isinstance(method, EvoLM)
    method.fit(FitContext(workdir=tmp_path, train_items=items()))
    summary = method.summary
    assert (summary["policy_steps"], summary["generator_steps"]) == (1, 1)
    run_dir = method.policy_dir.parent.parent / "run"
    steps = [json.loads(line) for line in (run_dir / "items.jsonl").read_text().splitlines()]
    step_records = [r for r in steps if r["kind"] == "step"]
    assert [r["role"] for r in step_records] == ["policy", "generator"]
    assert all({"step_seconds", "judge", "trl", "global_step"} <= set(r) for r in step_records)
    assert "rubrics" in step_records[1] and "parse" in step_records[1]["rubrics"]
    curves = [json.loads(line) for line in (run_dir / "telemetry.jsonl").read_text().splitlines()]
    assert [(c["step"], c["role"]) for c in curves] == [(1, "policy"), (2, "generator")]  # what the report draws
    assert all(isinstance(v, float) for c in curves for k, v in c.items() if k not in ("key", "step", "role"))
    assert {r["name"] for r in steps if r["kind"] == "eval"} == {"initial", "phase-1"}
    pairs = [json.loads(line) for line in (run_dir / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["new_step"] - p["old_step"] == 0 for p in pairs)  # one policy step: age 0 only
    samples = [json.loads(line) for line in (run_dir / "generator_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(s["reward"] == 0.0 for s in samples)  # 2 prompts x 2 rubrics, unparsable
    # The tiny model writes no parsable rubric: rubrics() says so, and score() is NaN (never a silent 0).
    assert method.rubrics([user_chat("What is 2 plus 2?")]) == [None]
    assert math.isnan(method.score([user_chat("What is 2 plus 2?")], ["4"])[0])
    assert method.tally.failed >= 1

    method.fit(FitContext(workdir=tmp_path, train_items=items()))  # finished: reused, not retrained
    assert method.summary["wall_seconds"] == summary["wall_seconds"]  # the stored summary, not a new run
    assert not list(run_dir.parent.glob("run.aborted-*"))

    ctx = PolicyContext("tiny-random", [list(it.prompt) for it in items(4)], tmp_path / "policy", "test", steps=2)
    policy_dir = method.train_policy(ctx)
    assert (policy_dir / "config.json").is_file() and method.summary["policy_steps"] == 2
    # Two policy phases, one over-optimisation series: the `test` RL preset probes gold accuracy at every step.
    rows = curve(tmp_path / "policy")
    assert [r["step"] for r in rows] == [0, 1, 2] and all(0 <= r["gold_accuracy"] <= 1 for r in rows)
    assert all(r["proxy_reward"] is None for r in rows)  # step 0 is before training; no rubric parses here later


def test_two_model_configuration_trains_a_separate_generator(tmp_path):
    method = create_method("evolm", preset="test", generator_model="tiny-random", n_heldout=0)
    method.fit(FitContext(workdir=tmp_path, train_items=items(4)))
    assert method.summary["two_models"] is True
    assert method.generator_dir != method.policy_dir
    assert (method.generator_dir / "config.json").is_file() and (method.policy_dir / "config.json").is_file()


def test_options_are_validated():
    with pytest.raises(ValueError, match="unknown option"):
        make_config("test", age_windw=(1, 2))
    assert make_config("test", age_window=[2, 5]).age_window == (2, 5)
    assert make_config("test", policy={"learning_rate": 0.5}).session.policy.learning_rate == 0.5
    with pytest.raises(ValueError, match="pairing"):
        make_config("test", pairing="sideways")
    with pytest.raises(ValueError, match="preset"):
        make_config("laptop")
    with pytest.raises(ValueError, match="options"):
        create_method("evolm", preset="test").fit(FitContext(workdir=".", options={"prompt": []}))


@pytest.mark.slow
def test_cpu_preset_trains_on_the_embedded_model_with_the_label_noise_audit(tmp_path):
    small = {"prompts_per_step": 2}
    method = create_method(
        "evolm", preset="cpu", cycles=1, steps_per_phase=1, n_prompts=4, n_heldout=2, policy=small, generator=small
    )
    method.fit(FitContext(workdir=tmp_path))
    summary = method.summary
    assert (summary["policy_steps"], summary["generator_steps"]) == (1, 1)
    assert set(summary["label_noise"]) == {"training_pairs", "history_pairs"}
    assert summary["judge"]["verdicts"] > 0
