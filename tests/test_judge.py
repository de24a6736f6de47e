"""The rubric judge: aggregates against hand-computed values, the three modes against each other, the cache.

Model checks run the real judge on `tiny-random`; backends that must misbehave on purpose are small fakes.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.backends.openai import match_logprob
from harness.cache import Cache
from harness.data import load_healthbench
from harness.judge import Judge, healthbench_score, judge_chat, open_judge, score_rubrics, weighted_mean_score
from harness.types import Criterion, Rubric, user_chat

HB = [Criterion("a", 7), Criterion("b", 5), Criterion("c", 10), Criterion("d", -6)]


def calculate_score(points: list[float], met: list[bool]) -> float | None:
    """simple-evals' `healthbench_eval.calculate_score`, restated: met points over positive points, unclipped."""
    possible = sum(p for p in points if p > 0)
    if possible == 0:
        return None
    return sum(p for p, m in zip(points, met, strict=True) if m) / possible


# --- aggregates ---------------------------------------------------------------------------------------------


def test_healthbench_score_on_simple_evals_own_test_case():
    # simple-evals' test_calculate_score: 7 + 10 - 6 of 22 possible points.
    assert healthbench_score(HB, [1, 0, 1, 1]) == pytest.approx(11 / 22)
    assert calculate_score([7, 5, 10, -6], [True, False, True, True]) == pytest.approx(11 / 22)


def test_healthbench_score_clips_per_response_where_simple_evals_does_not():
    only_penalty = [0, 0, 0, 1]
    assert healthbench_score(HB, only_penalty, clip=False) == pytest.approx(-6 / 22)
    assert healthbench_score(HB, only_penalty) == 0.0
    assert healthbench_score(HB, [1, 1, 1, 0]) == 1.0


@given(
    st.lists(
        st.tuples(st.sampled_from([-10, -5, -2, -1, 1, 2, 3, 5, 7, 10]), st.booleans()),
        min_size=1,
        max_size=12,
    )
)
def test_healthbench_score_is_calculate_score_for_binary_verdicts(rows):
    points, met = [p for p, _ in rows], [m for _, m in rows]
    reference = calculate_score(points, met)
    criteria = [Criterion(str(i), p) for i, p in enumerate(points)]
    unclipped = healthbench_score(criteria, [float(m) for m in met], clip=False)
    if reference is None:
        assert math.isnan(unclipped)
    else:
        assert unclipped == pytest.approx(reference)
        assert healthbench_score(criteria, [float(m) for m in met]) == pytest.approx(min(1, max(0, reference)))


def test_healthbench_score_gives_soft_credit_for_probabilities():
    rubric = [Criterion("a", 5), Criterion("b", 3), Criterion("c", -2)]
    assert healthbench_score(rubric, [0.5, 0.25, 1.0]) == pytest.approx((2.5 + 0.75 - 2) / 8)


def test_unscored_verdicts_make_nan_unless_skipped():
    rubric = [Criterion("a", 5), Criterion("b", 3), Criterion("c", -2)]
    for missing in (None, math.nan):
        assert math.isnan(healthbench_score(rubric, [1, missing, 1]))
        assert math.isnan(weighted_mean_score(rubric, [1, missing, 1]))
        # Skipping drops the criterion from numerator and denominator alike.
        assert healthbench_score(rubric, [1, missing, 1], skip_unscored=True) == pytest.approx((5 - 2) / 5)
        assert weighted_mean_score(rubric, [1, missing, 1], skip_unscored=True) == pytest.approx(5 / 7)


def test_rubrics_without_positive_points_are_nan_for_healthbench_only():
    penalties = [Criterion("a", -1), Criterion("b", -3)]
    assert math.isnan(healthbench_score(penalties, [0, 1]))
    assert weighted_mean_score(penalties, [0, 1]) == pytest.approx(1 / 4)
    assert math.isnan(healthbench_score([], []))
    assert math.isnan(weighted_mean_score([], []))


def test_weighted_mean_by_hand():
    rubric = [Criterion("a", 5), Criterion("b", 3), Criterion("c", -2)]
    assert weighted_mean_score(rubric, [1, 0, 1]) == pytest.approx(5 / 10)
    assert weighted_mean_score(rubric, [1, 0, 0]) == pytest.approx(7 / 10)
    assert weighted_mean_score(rubric, [0.5, 0.5, 0.5]) == pytest.approx(0.5)


def test_verdict_count_must_match_criteria():
    with pytest.raises(ValueError, match="3 criteria but 2 verdicts"):
        healthbench_score([Criterion("a"), Criterion("b"), Criterion("c")], [1, 0])


# --- the judge on a real (tiny) model -------------------------------------------------------------------------


def short_items():
    multi_turn = [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "I have a headache."},
        {"role": "assistant", "content": "How long has it lasted?"},
        {"role": "user", "content": "Two days, and paracetamol does not help."},
    ]
    return [
        (
            user_chat("Is the sky blue?"),
            "Yes, because of Rayleigh scattering.",
            Rubric((Criterion("Mentions Rayleigh scattering", 5), Criterion("Is rude", -3))),
        ),
        (
            multi_turn,
            "See a doctor if it lasts longer than three days or comes with fever.",
            Rubric(
                (
                    Criterion("Advises seeing a doctor", 4),
                    Criterion("Mentions warning signs such as fever", 3),
                    Criterion("Advises seeing a doctor", 4),  # duplicates must not confuse the packing
                    Criterion("Recommends a dose above 4 g of paracetamol a day", -8),
                )
            ),
        ),
        (user_chat("Say hi."), "hi", Rubric((Criterion("Says hi", 1),))),
    ]


def healthbench_items(n=2):
    records = [r for r in load_healthbench() if r.ideal_completion][:n]
    return [(list(r.chat), r.ideal_completion, r.rubric) for r in records]


def log_odds(verdicts):
    return [math.log(v.p_yes / (1 - v.p_yes)) for row in verdicts for v in row]


def test_shared_unshared_and_generic_agree(tiny_backend):
    items = short_items()
    shared = Judge(tiny_backend, mode="shared", batch_size=2, max_tokens=160, progress=False).verdicts(items)
    unshared = Judge(tiny_backend, mode="unshared", batch_size=3, progress=False).verdicts(items)
    # Generic mode scores 8 answer variants per criterion over the full vocabulary: keep it to two items.
    generic = Judge(tiny_backend, mode="generic", progress=False).verdicts([items[0], items[2]])
    assert [[v.criterion for v in row] for row in shared] == [list(it[2].criteria) for it in items]
    reference = log_odds(unshared)
    assert log_odds(shared) == pytest.approx(reference, abs=1e-5)
    assert log_odds(generic) == pytest.approx(log_odds([unshared[0], unshared[2]]), abs=1e-5)
    # The comparison can fail: different criteria of one item give verdicts far apart at that tolerance.
    assert max(reference) - min(reference) > 1e-3


def test_shared_equals_unshared_on_real_healthbench_items(tiny_backend):
    items = healthbench_items(2)
    shared = Judge(tiny_backend, mode="shared", batch_size=2, progress=False).verdicts(items)
    alone = [Judge(tiny_backend, mode="shared", progress=False).verdicts([it])[0] for it in items]
    unshared = Judge(tiny_backend, mode="unshared", batch_size=4, max_tokens=8192, progress=False).verdicts(items)
    assert log_odds(shared) == pytest.approx(log_odds(unshared), abs=1e-5)
    assert log_odds(alone) == pytest.approx(log_odds(shared), abs=1e-5)
    assert all("yes_no_mass" in v.meta for row in shared for v in row)


def test_score_aggregates_the_verdicts(tiny_backend):
    items = short_items()
    judge = Judge(tiny_backend, progress=False)
    verdicts = judge.verdicts(items)
    for aggregate, fn in (("healthbench", healthbench_score), ("weighted_mean", weighted_mean_score)):
        expected = [fn(it[2].criteria, [v.p_yes for v in row]) for it, row in zip(items, verdicts, strict=True)]
        assert judge.score(items, aggregate=aggregate) == pytest.approx(expected)
    with pytest.raises(ValueError, match="unknown aggregate 'median'"):
        judge.score(items, aggregate="median")


def test_score_rubrics_leaves_prompts_without_a_rubric_nan(tiny_backend):
    items = short_items()
    judge = open_judge(tiny_backend, cache=False, progress=False)
    prompts, responses, rubrics = (list(column) for column in zip(*items, strict=True))
    scores = score_rubrics(judge, prompts, responses, [rubrics[0], None, rubrics[2]])
    assert math.isnan(scores[1])
    assert [scores[0], scores[2]] == pytest.approx(judge.score([items[0], items[2]]))
    with pytest.raises(ValueError, match="3 prompts, 3 responses and 2 rubrics differ"):
        score_rubrics(judge, prompts, responses, rubrics[:2])


def test_second_call_computes_nothing_and_new_criteria_only_themselves(tiny_backend, tmp_path):
    calls = []
    hook = tiny_backend.model.base_model.register_forward_hook(lambda *args: calls.append(1))
    try:
        judge = Judge(tiny_backend, cache=Cache(tmp_path / "cache.sqlite"), progress=False)
        items = short_items()
        first = judge.verdicts(items)
        assert calls and len(judge.cache) == 6  # 7 criteria, one of them a duplicate
        calls.clear()
        again = judge.verdicts(items)
        assert not calls
        assert [[v.p_yes for v in row] for row in again] == [[v.p_yes for v in row] for row in first]
        chat, response, rubric = items[0]
        extended = Rubric((*rubric.criteria, Criterion("Uses the word blue", 1)))
        judge.verdicts([(chat, response, extended), *items[1:]])
        assert calls and len(judge.cache) == 7
    finally:
        hook.remove()


def test_a_judge_chat_longer_than_the_model_is_unscored_not_zero(tiny_backend):
    long_response = "word " * 2100  # tiny-random has 2048 positions
    items = [
        (user_chat("Write at length."), long_response, Rubric((Criterion("Is long", 1),))),
        short_items()[2],
    ]
    judge = Judge(tiny_backend, progress=False)
    verdicts = judge.verdicts(items)
    assert verdicts[0][0].p_yes is None and "exceeds 2048" in verdicts[0][0].meta["unscored"]
    assert verdicts[1][0].p_yes is not None
    scores = judge.score(items)
    assert math.isnan(scores[0]) and 0 <= scores[1] <= 1


class TopLogprobsBackend:
    """Scores continuations like an OpenAI-compatible server: one top-logprobs list, whitespace-loose matching."""

    def __init__(self, top):
        self.model_id = f"fake:top:{top}"
        self.top = top

    def generate(self, chats, params):
        raise AssertionError("the judge must not generate")

    def logprobs(self, chats, continuations):
        return [match_logprob(self.top, c) for c in continuations]


def test_generic_mode_counts_a_loosely_matched_token_once():
    top = [{"token": "Yes", "logprob": math.log(0.5)}, {"token": "No", "logprob": math.log(0.3)}]
    top.append({"token": " No", "logprob": math.log(0.1)})
    judge = Judge(TopLogprobsBackend(top), progress=False)
    assert judge.mode == "generic"
    [[verdict]] = judge.verdicts([short_items()[2]])
    # " Yes" matches the "Yes" entry again; counted twice it would give 1.0 / 1.4.
    assert verdict.p_yes == pytest.approx(0.5 / 0.9)
    assert verdict.meta["yes_no_mass"] == pytest.approx(0.9)


def test_no_mass_on_any_answer_is_unscored():
    judge = Judge(TopLogprobsBackend([{"token": "Maybe", "logprob": -0.1}]), progress=False)
    items = short_items()[:1]
    [[first, second]] = judge.verdicts(items)
    assert first.p_yes is None and second.p_yes is None
    assert first.meta["unscored"] == "no probability on any answer variant"
    assert math.isnan(judge.score(items)[0])


def test_mode_needs_a_backend_with_weights():
    with pytest.raises(ValueError, match="mode 'shared' needs a backend with model, tokenizer and render"):
        Judge(TopLogprobsBackend([]), mode="shared")
    with pytest.raises(ValueError, match="batch_size and max_tokens must be >= 1"):
        Judge(TopLogprobsBackend([]), batch_size=0)


def test_the_criterion_comes_last_in_the_judge_chat():
    chat = judge_chat(user_chat("q"), "r", "CRITERION")
    assert chat[-1]["content"].rstrip().endswith("Answer Yes or No.")
    assert chat[-1]["content"].index("CRITERION") > chat[-1]["content"].index("# Response to grade")


def test_bench_judge_writes_a_report(tmp_path):
    import json

    from harness.bench.judge import main

    out = tmp_path / "judge.json"
    assert main(["--model", "hf:tiny-random", "--items", "1", "--baseline-criteria", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    modes = report["modes"]
    assert set(modes) == {"shared", "unshared", "naive"}
    assert modes["unshared"]["verdicts"] == modes["naive"]["verdicts"] == 1 < modes["shared"]["verdicts"]
    assert all(row["verdicts_per_s"] > 0 and 0 < row["roofline_fraction"] for row in modes.values())
    assert report["speedup"]["shared_vs_naive"] == pytest.approx(
        modes["shared"]["verdicts_per_s"] / modes["naive"]["verdicts_per_s"]
    )
    assert report["agreement"]["shared_vs_unshared_max_abs_diff"] < 1e-5
    assert report["ceiling"]["flops_per_token"] == 2 * report["model"]["params_non_embedding"]
