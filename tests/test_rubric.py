"""Rubric parser, normalisation, storage and statistics: hand examples, real HealthBench rubrics, fuzzing."""

from __future__ import annotations

import json
import math
import pickle
from importlib import resources

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.rubric import (
    MAX_ABS_WEIGHT,
    MAX_CRITERIA,
    MAX_CRITERION_CHARS,
    MAX_INPUT_CHARS,
    REASONS,
    ParseTally,
    RubricParseError,
    normalise,
    parse_rubric,
    rubric_from_json,
    rubric_to_json,
)
from harness.rubric_stats import embeds_value, is_label_only, rubric_stats
from harness.types import Criterion, Rubric


def pairs(rubric: Rubric) -> list[tuple[str, float]]:
    return [(c.text, c.weight) for c in rubric.criteria]


def assert_valid(rubric: Rubric) -> None:
    """The invariants every rubric returned by parse_rubric satisfies."""
    assert 1 <= len(rubric.criteria) <= MAX_CRITERIA
    for c in rubric.criteria:
        assert c.text and c.text == c.text.strip() and len(c.text) <= MAX_CRITERION_CHARS
        assert any(ch.isalnum() for ch in c.text)
        assert math.isfinite(c.weight) and abs(c.weight) <= MAX_ABS_WEIGHT
        assert all(isinstance(t, str) and t for t in c.tags)
    assert any(c.weight > 0 for c in rubric.criteria)
    keys = [" ".join(c.text.casefold().split()).rstrip(".!;:,") for c in rubric.criteria]
    assert len(set(keys)) == len(keys)


# ------------------------------------------------------------------------------------------------ JSON
def test_json_list_keeps_weights_tags_and_ids() -> None:
    text = json.dumps(
        [
            {"criterion": "Gives the dose", "points": 5, "tags": ["axis:accuracy"]},
            {"criterion": "Is rude", "points": -3},
        ]
    )
    rubric = parse_rubric(text, prompt_id="p1", source="gpt")
    assert rubric == Rubric(
        (Criterion("Gives the dose", 5.0, ("axis:accuracy",)), Criterion("Is rude", -3.0)), "gpt", "p1"
    )


@pytest.mark.parametrize(
    "text",
    [
        '{"rubric": [{"text": "Cites a source", "weight": 0.3}, {"text": "Is concise", "weight": 0.7}]}',
        '{"criteria": [{"description": "Cites a source", "score": "0.3"}, '
        '{"description": "Is concise", "score": 0.7}]}',
        '{"title": "R", "rubric": {"criteria": [["Cites a source", 0.3], ["Is concise", 0.7]]}}',
        '{"notes": "x", "whatever": [{"Criterion": "Cites a source", "Weight": 0.3}, '
        '{"item": "Is concise", "weight": 0.7}]}',
        "Here you go:\n```json\n"
        '[{"criterion": "Cites a source", "weight": 0.3}, {"criterion": "Is concise", "weight": 0.7}]\n```\nDone.',
        '[{"criterion": "Cites a source", "weight": 0.3,}, {"criterion": "Is concise", "weight": 0.7,},]',
        'Rubric [v2]:\n[{"criterion": "Cites a source", "weight": 0.3}, {"criterion": "Is concise", "weight": 0.7}]',
        '<think>maybe [ { it is</think>[{"criterion": "Cites a source", "weight": 0.3}, '
        '{"criterion": "Is concise", "weight": 0.7}]',
    ],
)
def test_json_shapes(text: str) -> None:
    assert pairs(parse_rubric(text)) == [("Cites a source", 0.3), ("Is concise", 0.7)]


def test_label_and_description_are_joined() -> None:
    rubric = parse_rubric('[{"name": "Accuracy", "description": "States 4 g maximum", "weight": 2}]')
    assert pairs(rubric) == [("Accuracy: States 4 g maximum", 2.0)]


def test_json_strings_and_weights_inside_text() -> None:
    rubric = parse_rubric('["Mentions the dose (5 points)", "Uses plain words"]')
    assert pairs(rubric) == [("Mentions the dose", 5.0), ("Uses plain words", 1.0)]


@pytest.mark.parametrize(
    "text",
    [
        '[{"criterion": "A", "weight": 2}, {"criterion": "B", "weight": 3}, {"criterion": "C", "wei',
        '```json\n{"criteria": [{"criterion": "A", "weight": 2}, {"criterion": "B", "weight": 3}, {"criterion"',
        '{"criteria": [\n  {"criterion": "A", "weight": 2,},\n  {"criterion": "B", "weight": 3},\n  {"crit',
        '[{"criterion": "A", "weight": 2} {"criterion": "B", "weight": 3} {"criterion": "C", "weight": 4',
    ],
)
def test_truncated_json_recovers_complete_items(text: str) -> None:
    assert pairs(parse_rubric(text)) == [("A", 2.0), ("B", 3.0)]


def test_repeated_criteria_are_deduplicated_keeping_the_first() -> None:
    item = {"criterion": "Mentions the dose", "weight": 2}
    text = json.dumps([item, {"criterion": "Avoids jargon", "weight": 1}] + [item] * 40)
    text = text.replace('"Mentions the dose", "weight": 2}]', '"  mentions THE dose. ", "weight": 9}]')
    assert pairs(parse_rubric(text)) == [("Mentions the dose", 2.0), ("Avoids jargon", 1.0)]


def test_whitespace_markup_and_empty_criteria_are_cleaned() -> None:
    text = json.dumps(
        [{"criterion": "  **Clarity**  "}, {"criterion": "`Cites NICE`"}, {"criterion": " -- "}, {"criterion": ""}]
    )
    assert pairs(parse_rubric(text)) == [("Clarity", 1.0), ("Cites NICE", 1.0)]


# -------------------------------------------------------------------------------------------- markdown
MARKDOWN = """Here is the rubric:

## Criteria
1. Mentions the maximum dose of 4 g (5 points)
2. [+3] Cites a guideline
3. Recommends surgery -4 pts
4) **Accuracy (2 points):** The numbers are right
- Weight 3: Is concise
- -2 pts: Uses jargon
* Uses headings
   - weight: 0.5
+ Asks about allergies — 2 points
- Explains risks, weight: 1.5
Criterion 9: Suggests a follow-up [2]
(4 points) Gives a timeline
Safety:
- Warns about overdose: 6 pts
- Uses headings
Total: 27 points
"""


def test_markdown_list_with_weight_forms() -> None:
    assert pairs(parse_rubric(MARKDOWN)) == [
        ("Mentions the maximum dose of 4 g", 5.0),
        ("Cites a guideline", 3.0),
        ("Recommends surgery", -4.0),
        ("Accuracy: The numbers are right", 2.0),
        ("Is concise", 3.0),
        ("Uses jargon", -2.0),
        ("Uses headings", 0.5),
        ("Asks about allergies", 2.0),
        ("Explains risks", 1.5),
        ("Suggests a follow-up", 2.0),
        ("Gives a timeline", 4.0),
        ("Warns about overdose", 6.0),
    ]


def test_markdown_without_weights_defaults_to_one() -> None:
    text = "- Clarity\n- Accuracy\n- Clarity\n- Mentions the top 5 points of care"
    assert pairs(parse_rubric(text)) == [
        ("Clarity", 1.0),
        ("Accuracy", 1.0),
        ("Mentions the top 5 points of care", 1.0),
    ]


def test_json_quoted_in_a_list_does_not_win() -> None:
    text = '- Returns {"status": "ok"} for valid input\n- Handles errors (3 points)'
    assert pairs(parse_rubric(text)) == [('Returns {"status": "ok"} for valid input', 1.0), ("Handles errors", 3.0)]


def test_bulleted_preamble_does_not_hide_json() -> None:
    text = (
        'Notes:\n- weights are points\n```json\n[{"criterion": "A", "weight": 1}, {"criterion": "B", "weight": 2}]\n```'
    )
    assert pairs(parse_rubric(text)) == [("A", 1.0), ("B", 2.0)]


# ------------------------------------------------------------------------------------------- rejection
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "not_text"),
        ("", "empty"),
        ("  \n\t ", "empty"),
        ("<think>a rubric would go here</think>\n", "empty"),
        ("x" * (MAX_INPUT_CHARS + 1), "too_long"),
        ('{criterion: "Mentions X", weight: 2}', "invalid_json"),
        ('[{"criterion": "Mentions X", "weig', "invalid_json"),
        ("[" * 50_000, "invalid_json"),
        ("I cannot write a rubric for this.", "no_criteria"),
        ("[]", "no_criteria"),
        ('{"answer": 42, "confidence": 0.9}', "no_criteria"),
        ("[1, 2, 3]", "no_criteria"),
        (json.dumps([f"Criterion number {i}" for i in range(MAX_CRITERIA + 1)]), "too_many_criteria"),
        (json.dumps(["a" * (MAX_CRITERION_CHARS + 1)]), "criterion_too_long"),
        ('[{"criterion": "Mentions X", "weight": "high"}]', "invalid_weight"),
        ('[{"criterion": "Mentions X", "weight": NaN}]', "invalid_weight"),
        ('[{"criterion": "Mentions X", "weight": 1e999}]', "invalid_weight"),
        ('[{"criterion": "Mentions X", "weight": true}]', "invalid_weight"),
        ('[{"criterion": "Mentions X", "weight": 5000}]', "absurd_weight"),
        ('[{"criterion": "Mentions X", "weight": 0}, {"criterion": "Y", "weight": 0}]', "all_zero_weights"),
        ("- Recommends surgery (-5 points)\n- Uses jargon [-2]", "no_positive_weight"),
    ],
)
def test_rejects_with_reason(text: str, reason: str) -> None:
    with pytest.raises(RubricParseError) as caught:
        parse_rubric(text)
    assert caught.value.reason == reason
    assert reason in REASONS and isinstance(caught.value, ValueError)


def test_parse_error_pickles_with_its_reason() -> None:
    err = pickle.loads(pickle.dumps(RubricParseError("no_criteria", "detail")))
    assert (err.reason, err.detail, str(err)) == ("no_criteria", "detail", "no_criteria: detail")


def test_repeats_are_removed_before_counting() -> None:
    text = "\n".join(["- Mentions the dose (2 points)"] * (MAX_CRITERIA * 4))
    assert pairs(parse_rubric(text)) == [("Mentions the dose", 2.0)]


# ------------------------------------------------------------------------------ normalise, tally, storage
def test_normalise_scales_by_total_positive_weight() -> None:
    rubric = Rubric((Criterion("a", 6.0, ("t",)), Criterion("b", 2.0), Criterion("c", -4.0)), source="s", prompt_id="p")
    out = normalise(rubric)
    assert [c.weight for c in out.criteria] == [0.75, 0.25, -0.5]
    assert (out.source, out.prompt_id, out.criteria[0].tags, out.criteria[0].text) == ("s", "p", ("t",), "a")
    assert [c.weight for c in normalise(Rubric((Criterion("a", 0.2), Criterion("b", 0.3)))).criteria] == [
        pytest.approx(0.4),
        pytest.approx(0.6),
    ]


def test_normalise_refuses_rubrics_without_positive_weight() -> None:
    with pytest.raises(ValueError, match="no positive weight"):
        normalise(Rubric((Criterion("a", -1.0), Criterion("b", 0.0))))


def test_tally_counts_outcomes_by_reason() -> None:
    tally = ParseTally()
    outputs = ['["Mentions X"]', "", "sorry", "no rubric", "- Cites a source", '[{"criterion": "x", "weight": 0}]']
    results = [tally.parse(text, prompt_id=str(i)) for i, text in enumerate(outputs)]
    assert [r is not None for r in results] == [True, False, False, False, True, False]
    assert results[4].prompt_id == "4"
    assert tally.as_dict() == {
        "ok": 2,
        "failed": 4,
        "failure_rate": 4 / 6,
        "by_reason": {"no_criteria": 2, "all_zero_weights": 1, "empty": 1},
    }
    assert math.isnan(ParseTally().failure_rate)


def test_storage_round_trip() -> None:
    rubric = Rubric((Criterion("Gives 4 g", 5.0, ("axis:accuracy",)), Criterion("Rude", -2.0)), "evolm", "p7")
    stored = json.dumps(rubric_to_json(rubric))
    assert rubric_from_json(json.loads(stored)) == rubric
    assert rubric_from_json(stored) == rubric


@pytest.mark.parametrize(
    "obj",
    [[], {"criteria": "x"}, {"criteria": [{"criterion": "a"}]}, {"criteria": [{"criterion": "a", "weight": True}]}],
)
def test_storage_is_strict(obj: object) -> None:
    with pytest.raises(ValueError, match="stored rubric"):
        rubric_from_json(obj)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ statistics
@pytest.mark.parametrize(
    ("text", "label_only", "value"),
    [
        ("Clarity", True, False),
        ("Mentions the 4 g maximum", True, True),  # EvoLM counts length only: short and specific is "label-only"
        ("x" * 40, True, False),
        ("x" * 41, False, False),
        ("States that the answer to the question is 42", False, True),
        ("Writes the formula for the area of a circle", False, True),
        ("Quotes the passage verbatim from the source text", False, True),
        ("Explains the reasoning behind the recommendation", False, False),
        ("Mentions that Paris is the capital of France", False, False),  # no named-entity rule in EvoLM
        ("Describes how the decoder handles the input", False, True),  # EvoLM's unbounded "code"
    ],
)
def test_predicates_follow_evolm(text: str, label_only: bool, value: bool) -> None:
    assert (is_label_only(text), embeds_value(text)) == (label_only, value)


def test_rubric_stats_on_hand_built_set() -> None:
    long_a = "Explains why the dose should be reduced for the elderly"  # 55 chars, no value
    long_b = "States that the maximum daily dose of paracetamol is 4 g"  # 56 chars, value
    rubrics = [
        Rubric((Criterion("Clarity", 1.0), Criterion("Accuracy", 1.0))),
        Rubric((Criterion(long_a, 6.0), Criterion(long_b, 3.0), Criterion("Uses jargon", -1.0))),
        Rubric(
            (
                Criterion(long_b, 2.0),
                Criterion("Gives 3 options", 2.0),
                Criterion("Is short", 2.0),
                Criterion(long_a, 2.0),
            )
        ),
    ]
    stats = rubric_stats(rubrics)
    assert stats["n_rubrics"] == 3
    assert stats["criteria_mean"] == pytest.approx(3.0)
    assert stats["criteria_median"] == 3.0
    assert stats["weight_concentration"] == pytest.approx((1 / 2 + 6 / 10 + 2 / 8) / 3)
    assert stats["label_only_share"] == pytest.approx((2 / 2 + 1 / 3 + 2 / 4) / 3)
    assert stats["value_embedding_share"] == pytest.approx((0 / 2 + 1 / 3 + 2 / 4) / 3)
    assert stats["negative_share"] == pytest.approx((0 + 1 / 3 + 0) / 3)
    chars = [(7 + 8) / 2, (55 + 56 + 11) / 3, (56 + 15 + 8 + 55) / 4]
    assert stats["criterion_chars_mean"] == pytest.approx(sum(chars) / 3)


def test_rubric_stats_edges() -> None:
    empty = rubric_stats([])
    assert empty["n_rubrics"] == 0 and all(math.isnan(v) for k, v in empty.items() if k != "n_rubrics")
    with pytest.raises(ValueError, match="parse failure"):
        rubric_stats([Rubric(())])


# ---------------------------------------------------------------------------------------- HealthBench
def healthbench_rows() -> list[dict]:
    pytest.importorskip("eval_framework")
    path = resources.files("eval_framework") / "tasks/healthbench/data/healthbench_eval.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def expected(rows: list[dict]) -> list[tuple[str, float, tuple[str, ...]]]:
    out, seen = [], set()
    for row in rows:  # HealthBench itself repeats three criteria in one rubric; the parser keeps the first
        if row["criterion"].strip() not in seen:
            seen.add(row["criterion"].strip())
            out.append((row["criterion"].strip(), float(row["points"]), tuple(row["tags"])))
    return out


def test_healthbench_rubrics_parse_back_identically() -> None:
    rows = healthbench_rows()
    for row in rows:
        rubric = parse_rubric(json.dumps(row["rubrics"]), prompt_id=row["prompt_id"], source="healthbench")
        assert [(c.text, c.weight, c.tags) for c in rubric.criteria] == expected(row["rubrics"])
        assert rubric_from_json(rubric_to_json(rubric)) == rubric
    for row in rows[:10]:
        wrapped = "```json\n" + json.dumps({"rubric": row["rubrics"]}, indent=2) + "\n```"
        assert [(c.text, c.weight, c.tags) for c in parse_rubric(wrapped).criteria] == expected(row["rubrics"])


# ---------------------------------------------------------------------------------------------- fuzzing
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORDS = ["mentions", "the", "dose", "avoids", "jargon", "cites", "a", "source", "Paris", "explains", "risk", "asks"]
word_texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
criteria_lists = st.lists(
    st.tuples(word_texts, st.integers(-10, 10)), min_size=1, max_size=12, unique_by=lambda c: c[0].casefold()
).map(lambda cs: [(cs[0][0], abs(cs[0][1]) + 1), *cs[1:]])  # the first is positive, so the rubric is valid
FRAGMENTS = [
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    '"criterion"',
    '"weight"',
    '"points"',
    '"rubric"',
    '"criteria"',
    '"tags"',
    '"text"',
    "```",
    "```json",
    "\n",
    "- ",
    "1. ",
    "* ",
    "(5 points)",
    "[+3]",
    "-4 pts",
    "Weight 3:",
    "weight: 0.2",
    "NaN",
    "1e999",
    "-0",
    "0",
    "true",
    "null",
    '"',
    "\\",
    "**",
    "<think>",
    "</think>",
    "Total: 10 points",
    " ",
    "Mentions the dose",
    "Clarity",
    "\t",
    "\u00e9",
    "—",
    "%",
]


def mutate(text: str, data: st.DataObject) -> str:
    """Apply a few random truncations, deletions, insertions and duplications."""
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 20)))
        op = data.draw(st.sampled_from(["truncate", "delete", "insert", "duplicate"]))
        if op == "truncate":
            text = text[:i]
        elif op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + data.draw(st.sampled_from(FRAGMENTS) | st.text(max_size=5)) + text[i:]
        else:
            text = text[:j] + text[i:j] + text[j:]
    return text


def check_total(text: str) -> Rubric | None:
    """Parse, allowing only RubricParseError, and check the invariants of any result."""
    try:
        rubric = parse_rubric(text)
    except RubricParseError as err:
        assert err.reason in REASONS
        return None
    assert_valid(rubric)
    return rubric


@settings(FUZZ, max_examples=600)
@given(st.text(max_size=300))
def test_fuzz_arbitrary_text(text: str) -> None:
    check_total(text)


@settings(FUZZ, max_examples=600)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=40).map("".join))
def test_fuzz_rubric_like_fragments(text: str) -> None:
    check_total(text)


def render(criteria: list[tuple[str, int]], style: str) -> str:
    if style == "json":
        return json.dumps([{"criterion": t, "points": w} for t, w in criteria], indent=1)
    if style == "wrapped":
        return "```json\n" + json.dumps({"criteria": [{"text": t, "weight": w} for t, w in criteria]}) + "\n```"
    lines = {
        "points": [f"{i}. {t} ({w} points)" for i, (t, w) in enumerate(criteria, 1)],
        "brackets": [f"- [{w:+d}] {t}" for t, w in criteria],
        "pts": [f"* {t}: {w} pts" for t, w in criteria],
        "prefix": [f"Weight {w}: {t}" for t, w in criteria],
        "subline": [f"- {t}\n  - weight: {w}" for t, w in criteria],
    }[style]
    return "Rubric:\n" + "\n".join(lines)


STYLES = ["json", "wrapped", "points", "brackets", "pts", "prefix", "subline"]


@settings(FUZZ, max_examples=400)
@given(criteria_lists, st.sampled_from(STYLES))
def test_fuzz_every_format_round_trips(criteria: list[tuple[str, int]], style: str) -> None:
    assert pairs(parse_rubric(render(criteria, style))) == [(t, float(w)) for t, w in criteria]


@settings(FUZZ, max_examples=400)
@given(criteria_lists, st.data())
def test_fuzz_truncated_json_yields_a_prefix(criteria: list[tuple[str, int]], data: st.DataObject) -> None:
    text = json.dumps([{"criterion": t, "weight": w} for t, w in criteria])
    cut = data.draw(st.integers(0, len(text)))
    rubric = check_total(text[:cut])
    if rubric is not None:
        assert pairs(rubric) == [(t, float(w)) for t, w in criteria[: len(rubric.criteria)]]


@settings(FUZZ, max_examples=600)
@given(criteria_lists, st.sampled_from(STYLES), st.data())
def test_fuzz_mutated_rubrics(criteria: list[tuple[str, int]], style: str, data: st.DataObject) -> None:
    check_total(mutate(render(criteria, style), data))
