"""EvoRubric: each verification stage on constructed inputs, the memory pool, the rewards, and end to end."""

import json
import math

import pytest

from baselines.coevolution.data import chat_id, healthbench_records
from baselines.coevolution.history import ResponseHistory
from baselines.coevolution.roles import ModelHandle
from baselines.evorubric import EvoRubric, make_config
from baselines.evorubric.pipeline import StageCounts, Stages, verify_group
from baselines.evorubric.pool import MemoryPool
from baselines.evorubric.rewards import generator_reward_func, reasoner_reward_func
from baselines.evorubric.verify import CATEGORIES, LooInput, MetaVerifier, loo_consensus, zero_variance
from harness.judge import Judge
from harness.methods import FitContext, PolicyContext, create_method
from harness.monitor import curve
from harness.rubric import ParseTally
from harness.types import Criterion, Rubric, Verdict, user_chat


class ScriptedJudge:
    """A fake judge: P(yes) = rule(response, criterion text); records what it was asked."""

    aggregate = "weighted_mean"

    def __init__(self, rule):
        self.rule, self.asked = rule, []

    def verdicts(self, items):
        self.asked += [(response, c.text) for _, response, rubric in items for c in rubric.criteria]
        return [[Verdict(c, self.rule(response, c.text)) for c in rubric.criteria] for _, response, rubric in items]


def defect_rule(response, question):
    """The meta-verifier's fake: a candidate named `bad:<category>` has exactly that defect."""
    return 0.9 if any(response.endswith(f"bad:{name}") and question == q for name, q in CATEGORIES.items()) else 0.1


# ------------------------------------------------------------------------------------------- meta-verifier
def test_meta_verifier_rejects_each_defect_category_and_passes_clean_criteria():
    judge = ScriptedJudge(defect_rule)
    candidates = [f"bad:{name}" for name in CATEGORIES] + ["Names the drug's maximum daily dose"]
    flags = MetaVerifier(judge).check("How much paracetamol can I take?", [], candidates)
    assert flags == [[name] for name in CATEGORIES] + [[]]


def test_meta_verifier_rejects_pool_duplicates_without_asking_the_model():
    judge = ScriptedJudge(defect_rule)
    flags = MetaVerifier(judge).check("q", ["Gives the dose."], ["gives  the DOSE", "Mentions liver damage"])
    assert flags == [["semantic_duplicate"], []]
    assert all("gives" not in response.lower() for response, _ in judge.asked)
    assert len(judge.asked) == len(CATEGORIES)  # only the new criterion, once per defect


def test_meta_verifier_threshold_decides():
    judge = ScriptedJudge(lambda response, question: 0.6 if question == CATEGORIES["trivial"] else 0.0)
    assert MetaVerifier(judge, threshold=0.5).check("q", [], ["x"]) == [["trivial"]]
    assert MetaVerifier(judge, threshold=0.7).check("q", [], ["x"]) == [[]]


def test_the_trained_policy_can_meta_verify_through_the_judge_machinery(tiny_backend):
    handle = ModelHandle(tiny_backend.model, tiny_backend.tokenizer, "policy")
    judge = Judge(handle, progress=False)
    assert judge.mode == "shared"  # the in-training model gets the judge's shared-prefix grading
    flags = MetaVerifier(judge, threshold=0.99).check("q", [], ["Names the dose"])
    assert flags == [[]]  # tiny-random is unsure of everything: P(yes) near 0.5 for every defect


# ------------------------------------------------------------------------------------- zero-variance pruning
def test_zero_variance_drops_criteria_with_identical_verdicts_across_the_group():
    rows = [
        [0.9, 0.8, 0.6],  # all yes: flat
        [0.1, 0.2, 0.4],  # all no: flat
        [0.9, 0.1, 0.9],  # separates: kept
        [0.9, None, 0.2],  # separates on the scored ones: kept
        [None, None, 0.7],  # one scored verdict: no evidence of variance
    ]
    assert zero_variance(rows) == [True, True, False, False, True]


# ----------------------------------------------------------------------------------- leave-one-out consensus
def test_loo_accepts_agreement_rejects_opposition_and_abstains_without_evidence():
    c = {name: Criterion(name) for name in ("a", "b", "c", "d", "flat")}
    verdicts = {
        "a": [0.9, 0.9, 0.1, 0.1],
        "b": [0.1, 0.1, 0.9, 0.9],  # the opposite order: outvoted by a, c and d
        "c": [0.9, 0.8, 0.2, 0.1],
        "d": [0.9, 0.9, 0.1, 0.1],
        "flat": [0.9, 0.9, 0.9, 0.9],
    }
    data = LooInput([[c[name]] for name in ("a", "b", "c", "d", "flat")], verdicts, 4)
    decisions = [[d.decision for d in row] for row in loo_consensus(data)]
    assert decisions == [["accept"], ["reject"], ["accept"], ["accept"], ["abstain"]]


def test_loo_leaves_the_rubric_itself_out_of_its_consensus():
    own = [Criterion(f"x{i}") for i in range(3)]
    other = Criterion("y")
    verdicts = {**{c.text: [0.9, 0.9, 0.1, 0.1] for c in own}, "y": [0.1, 0.1, 0.9, 0.9]}
    decisions = loo_consensus(LooInput([own, [other]], verdicts, 4))
    # Were rubric 0 part of its own consensus, its three criteria would outvote rubric 1 and be accepted.
    assert [d.decision for d in decisions[0]] == ["reject"] * 3
    assert [d.decision for d in decisions[1]] == ["reject"]


def test_loo_uses_the_pool_as_a_peer_and_negative_weights_invert_goodness():
    penalty = Criterion("makes an error", -2.0)
    verdicts = {"makes an error": [0.1, 0.9], "pool": [0.9, 0.1]}
    data = LooInput([[penalty]], verdicts, 2, pool=[Criterion("pool")])
    assert loo_consensus(data)[0][0].decision == "accept"


# --------------------------------------------------------------------------------------- the whole pipeline
def grading_rule(response, criterion):
    if criterion == "separates":
        return 0.9 if "good" in response else 0.1
    if criterion == "opposes":
        return 0.1 if "good" in response else 0.9
    return defect_rule(response, criterion) if criterion in CATEGORIES.values() else 0.8


STAGE_SWITCHES = [(True, True, True), (False, True, True), (True, False, True), (True, True, False)]


@pytest.mark.parametrize("meta,zv,loo", STAGE_SWITCHES)
def test_verify_group_removes_what_each_enabled_stage_should(meta, zv, loo):
    judge = ScriptedJudge(grading_rule)
    stages = Stages(judge, MetaVerifier(judge) if meta else None, zv, loo)
    rubrics = [
        Rubric((Criterion("separates"), Criterion("always met"), Criterion("bad:trivial"))),
        Rubric((Criterion("separates"),)),
        Rubric((Criterion("opposes"),)),
        None,
        Rubric((Criterion("separates"),)),
    ]
    counts = StageCounts()
    kept = verify_group(stages, user_chat("q"), rubrics, ["good answer", "weak answer"], [], counts)
    texts = [[c.text for c in row] for row in kept]
    assert "separates" in texts[0] and texts[1] == ["separates"] and texts[3] == []
    assert ("always met" in texts[0]) == (not zv)  # flat on the group
    assert ("bad:trivial" in texts[0]) == (not meta and not zv)  # flagged trivial, and flat as well
    assert texts[2] == ([] if loo else ["opposes"])  # disagrees with its peers
    assert counts.parse_failed == 1 and counts.proposed == 6 and counts.validated == sum(map(len, texts))
    assert (counts.meta_rejected.get("trivial", 0) == 1) == meta


def test_generator_reward_is_the_validated_share_and_survivors_enter_the_pool():
    judge = ScriptedJudge(grading_rule)
    stages = Stages(judge, MetaVerifier(judge), True, True)
    pool, notes, total = MemoryPool(capacity=4), {}, ParseTally()
    chats, groups = {"p": user_chat("q")}, {"p": ["good answer", "weak answer"]}
    reward = generator_reward_func(chats, groups, pool, stages, lambda: 3, total, notes.update)
    completions = [
        '[{"criterion": "separates", "weight": 2}, {"criterion": "always met", "weight": 1}]',
        '[{"criterion": "separates", "weight": 1}]',
        "not a rubric",
    ]
    rewards = reward(prompts=None, completions=completions, prompt_id=["p", "p", "p"])
    assert rewards == [0.5, 1.0, 0.0]
    assert [c.text for c in pool.criteria("p")] == ["separates"]
    assert notes["verification"]["zero_variance_rate"] == pytest.approx(1 / 3)
    assert notes["pool"]["added_total"] == 1 and (total.ok, total.failed) == (2, 1)


# ------------------------------------------------------------------------------------------- memory pool
def test_pool_dedupes_caps_and_evicts_oldest_generated_first_but_keeps_expert_criteria():
    pool = MemoryPool(capacity=3, evict_after=2)
    pool.seed("p", Rubric((Criterion("expert small", 1), Criterion("expert big", 5), Criterion("x", 2))), limit=1)
    assert [c.text for c in pool.criteria("p")] == ["expert big"]
    assert pool.add("p", [Criterion("g1"), Criterion("G1."), Criterion("g2")], step=1) == 2
    assert pool.add("p", [Criterion("g3")], step=2) == 1  # full: g1 (oldest generated) makes room
    assert [c.text for c in pool.criteria("p")] == ["expert big", "g2", "g3"]
    assert pool.observe("p", [True, True, False]) == 0
    assert pool.observe("p", [True, True, False]) == 1  # g2 flat twice in a row; the expert one stays
    assert [c.text for c in pool.criteria("p")] == ["expert big", "g3"]
    restored = MemoryPool.from_json(json.loads(json.dumps(pool.to_json())))
    assert restored.criteria("p") == pool.criteria("p")
    assert pool.stats()["added_total"] == 3 and pool.stats()["evicted_total"] == 2
    with pytest.raises(ValueError, match="flags"):
        pool.observe("p", [True])


def test_reasoner_reward_is_the_pool_weighted_mean_and_flat_criteria_age_out(tmp_path):
    judge = ScriptedJudge(lambda response, c: {"sep": 0.9 if "good" in response else 0.1, "flat": 0.8}[c])
    pool = MemoryPool(capacity=4, evict_after=1)
    pool.add("p", [Criterion("sep", 3.0), Criterion("flat", 1.0)], step=0)
    history, notes = ResponseHistory(tmp_path / "r.jsonl"), {}
    reward = reasoner_reward_func({"p": user_chat("q")}, pool, judge, history, lambda: 5, True, notes.update)
    completions = [[{"role": "assistant", "content": t}] for t in ("good", "weak")]
    rewards = reward(prompts=None, completions=completions, prompt_id=["p", "p"])
    assert rewards == pytest.approx([(3 * 0.9 + 0.8) / 4, (3 * 0.1 + 0.8) / 4])
    assert [c.text for c in pool.criteria("p")] == ["sep"]  # "flat" did not separate the group
    assert [(e.step, e.response) for e in history.entries("p")] == [(5, "good"), (5, "weak")]
    assert notes["pool_flat_rate"] == 0.5


# --------------------------------------------------------------------------------------------- end to end
def test_fit_on_expert_seeded_pools_then_score_and_train_policy(tmp_path):
    method = create_method("evorubric", preset="test", meta_model="judge", n_heldout=0)
    assert isinstance(method, EvoRubric)
    method.fit(FitContext(workdir=tmp_path))
    summary = method.summary
    assert (summary["generator_steps"], summary["policy_steps"]) == (1, 1)
    assert summary["pool"]["prompts"] == 2 and summary["pool"]["criteria"] >= 2  # seeded from HealthBench
    records = [json.loads(line) for line in (method.policy_dir.parent.parent / "run" / "items.jsonl").open()]
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["role"] for r in steps] == ["generator", "policy"]
    assert {"verification", "pool", "rubrics"} <= set(steps[0]) and "pool_flat_rate" in steps[1]
    seen = next(iter(method.pool.entries))  # pools are keyed by chat content
    chat = next(list(r.chat) for r in healthbench_records() if chat_id(r.chat) == seen)
    assert method.rubrics([chat])[0] == method.pool.rubric(seen)
    assert not math.isnan(method.score([chat], ["Please see a doctor."])[0])
    reloaded = create_method("evorubric", preset="test", checkpoint=str(method.generator_dir))
    assert reloaded.rubrics([chat]) == method.rubrics([chat])  # the saved pool travels with the checkpoint
    ctx = PolicyContext("tiny-random", [chat], tmp_path / "policy", "test", steps=1)
    assert (method.train_policy(ctx) / "config.json").is_file()
    # A HealthBench chat given as a plain prompt still starts from its physician rubric, so the Reasoner trains...
    assert method.summary["policy_steps"] == 1 and not method.summary["skipped_phases"]
    # ...on the pool's reward, which the over-optimisation monitor logs next to the gold probe accuracy.
    rows = curve(tmp_path / "policy")
    assert [r["step"] for r in rows] == [0, 1] and isinstance(rows[1]["proxy_reward"], float)
    assert all(0 <= r["gold_accuracy"] <= 1 for r in rows)


def test_each_stage_can_be_switched_off_by_option():
    config = make_config("test", meta_verifier=False, zero_variance=False, loo_consensus=False)
    assert (config.meta_verifier, config.zero_variance, config.loo_consensus) == (False, False, False)
    with pytest.raises(ValueError, match="meta_model"):
        make_config("test", meta_model="oracle")


@pytest.mark.slow
def test_cpu_preset_trains_on_the_embedded_model(tmp_path):
    small = {"prompts_per_step": 2}
    method = create_method(
        "evorubric", preset="cpu", cycles=1, steps_per_phase=1, n_prompts=2, n_heldout=1, policy=small, generator=small
    )
    method.fit(FitContext(workdir=tmp_path))
    assert (method.summary["generator_steps"], method.summary["policy_steps"]) == (1, 1)
    assert method.summary["pool"]["criteria"] >= 2
