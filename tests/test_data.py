import gzip
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from harness.data import (
    SHARED_SETS,
    HubUnavailableError,
    healthbench_ideal_items,
    load_healthbench,
    load_hub_preferences,
    load_preference_jsonl,
    load_shared_set,
    map_judgebench_row,
    map_rewardbench2_row,
    map_rmbench_row,
    pandalm_majority,
    save_preference_jsonl,
    split_hh_dialogue,
)
from harness.types import PreferenceItem, user_chat

SHARED = Path(os.environ.get("HARNESS_SHARED_DATA", "/work/shared/data"))
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"no local copy of the shared sets at {SHARED}")


@pytest.fixture(scope="module")
def shared_sets():
    return {name: load_shared_set(name, SHARED) for name in SHARED_SETS}


@pytest.fixture(scope="module")
def healthbench():
    return load_healthbench()


# --- the shared sets: counts from /work/shared/data/README.md -------------------------------------------------


@needs_shared
def test_llmbar_counts_and_label_orientation(shared_sets):
    items = shared_sets["llmbar"]
    by = Counter(item.subset for item in items)
    assert by["LLMBar_Natural"] == 100
    assert sum(n for s, n in by.items() if s.startswith("LLMBar_Adversarial_")) == 319
    assert (by["Processed_FairEval"], by["Processed_LLMEval_2"], by["Processed_MT-Bench"]) == (66, 200, 200)
    # The README lists the CaseStudy sets without counts; these are the file lengths.
    assert {s: n for s, n in by.items() if s.startswith("CaseStudy_")} == {
        "CaseStudy_Base_10": 54,
        "CaseStudy_Base_9": 54,
        "CaseStudy_Constraint": 89,
        "CaseStudy_Negation": 59,
        "CaseStudy_Normal": 59,
    }
    raw = json.loads((SHARED / "llmbar" / "LLMBar_Natural.json").read_text())
    natural = [item for item in items if item.subset == "LLMBar_Natural"]
    for row, item in zip(raw, natural, strict=True):
        better, worse = (row["output_1"], row["output_2"]) if row["label"] == 1 else (row["output_2"], row["output_1"])
        assert (item.chosen, item.rejected, item.prompt[0]["content"]) == ((better,), (worse,), row["input"])


@needs_shared
def test_pandalm_majority_rule(shared_sets):
    items = shared_sets["pandalm"]
    assert len(items) == 472 + 422  # majority "2" + majority "1"; the 105 majority ties are dropped
    raw = {row["idx"]: row for row in json.loads((SHARED / "pandalm" / "testset-v1.json").read_text())}
    for item in items[:50]:
        row = raw[int(item.id.split("/")[1])]
        winner = pandalm_majority([row["annotator1"], row["annotator2"], row["annotator3"]])
        assert item.chosen == (row[f"response{winner}"],)
        assert item.prompt[0]["content"].startswith(row["instruction"])
    assert pandalm_majority([1, 1, 2]) == 1 and pandalm_majority([0, 0, 1]) == 0
    assert pandalm_majority([0, 1, 2]) is None


@needs_shared
def test_hh_rlhf_harmless_splits_shared_prefix(shared_sets):
    items = shared_sets["hh-rlhf-harmless"]
    assert len(items) == 2312
    with gzip.open(SHARED / "hh-rlhf-harmless" / "harmless-base_test.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh]
    for row, item in zip(rows, items, strict=True):
        assert item.prompt[-1]["role"] == "user"
        assert row["chosen"].rstrip().endswith(item.chosen[0]) and row["rejected"].rstrip().endswith(item.rejected[0])
        assert item.prompt[0]["content"] in row["chosen"]
    # Four source rows have an empty chosen reply; they are kept as written.
    assert sum(not item.chosen[0] for item in items) == 4


def test_split_hh_dialogue_by_hand():
    chosen = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how to X?\n\nAssistant: Like this."
    rejected = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how to X?\n\nAssistant: No."
    chat, good, bad = split_hh_dialogue(chosen, rejected)
    assert chat == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how to X?"},
    ]
    assert (good, bad) == ("Like this.", "No.")
    # Transcripts that part before the final turn: the earlier common assistant turn starts both responses.
    chat, good, bad = split_hh_dialogue(
        "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d", "\n\nHuman: a\n\nAssistant: x"
    )
    assert chat == [{"role": "user", "content": "a"}] and good.startswith("b\n\nHuman: c") and bad == "x"
    with pytest.raises(ValueError, match="share no prefix"):
        split_hh_dialogue("\n\nHuman: a", "\n\nHuman: b")


@needs_shared
def test_evalbiasbench_and_hhh_alignment(shared_sets):
    bias = shared_sets["evalbiasbench"]
    assert len(bias) == 80 and len({item.subset for item in bias}) == 6
    hhh = shared_sets["hhh-alignment"]
    assert len(hhh) == 221
    assert Counter(item.subset for item in hhh) == {"honest": 61, "helpful": 59, "harmless": 58, "other": 43}


@needs_shared
def test_every_shared_item_has_a_unique_id_and_a_user_turn_last(shared_sets):
    for name, items in shared_sets.items():
        assert len({item.id for item in items}) == len(items), name
        assert all(item.source and item.prompt[-1]["role"] == "user" for item in items), name


def test_load_shared_set_errors(tmp_path):
    with pytest.raises(KeyError, match="unknown preference set"):
        load_shared_set("nope", tmp_path)
    with pytest.raises(FileNotFoundError, match="llmbar"):
        load_shared_set("llmbar", tmp_path)


# --- JSONL schema -----------------------------------------------------------------------------------------------


def _items():
    chat = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"})
    return [
        PreferenceItem("a", tuple(user_chat("naïve ✓ question")), ("yes",), ("no",), "s1", "hand"),
        PreferenceItem("b", chat, ("A1", "A2"), ("B1", "B2", "B3"), "s2"),
        PreferenceItem("c", tuple(user_chat("empty answer wins")), ("",), ("bad\nanswer",)),
    ]


def test_save_load_round_trip(tmp_path):
    path = tmp_path / "prefs.jsonl"
    save_preference_jsonl(_items(), path)
    assert load_preference_jsonl(path) == _items()
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first["prompt"] == "naïve ✓ question" and first["chosen"] == ["yes"]


def test_save_refuses_repeated_ids(tmp_path):
    item = _items()[0]
    with pytest.raises(ValueError, match="'a'"):
        save_preference_jsonl([item, item], tmp_path / "dup.jsonl")
    assert not (tmp_path / "dup.jsonl").exists()


@needs_shared
def test_round_trip_of_real_items(shared_sets, tmp_path):
    items = shared_sets["hh-rlhf-harmless"][:200] + shared_sets["llmbar"][:50]
    save_preference_jsonl(items, tmp_path / "real.jsonl")
    assert load_preference_jsonl(tmp_path / "real.jsonl") == items


def test_string_and_list_forms_and_numeric_ids(tmp_path):
    path = tmp_path / "p.jsonl"
    line = {"id": 7, "prompt": [{"role": "user", "content": "q"}], "chosen": "x", "rejected": ["y", "z"]}
    path.write_text(json.dumps(line) + "\n\n")
    (item,) = load_preference_jsonl(path)
    assert (item.id, item.chosen, item.rejected, item.subset, item.source) == ("7", ("x",), ("y", "z"), "default", "")


GOOD = {"id": "i", "prompt": "q", "chosen": "x", "rejected": "y"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"chosen": 3}, "chosen"),
        ({"rejected": []}, "rejected"),
        ({"rejected": ["ok", None]}, "rejected"),
        ({"id": ""}, "id"),
        ({"id": True}, "id"),
        ({"subset": 1}, "subset"),
        ({"choosen": "x"}, "choosen"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [{"role": "user"}]}, "prompt"),
        ({"prompt": [{"role": "robot", "content": "q"}]}, "prompt"),
        ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, "prompt"),
    ],
)
def test_bad_field_names_file_line_and_field(tmp_path, change, field):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "id": "j", **change}) + "\n")
    with pytest.raises(ValueError, match=rf"bad\.jsonl:2: field '{field}'"):
        load_preference_jsonl(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": "j", "prompt": "q", "chosen": "x"}', "bad.jsonl:2: field 'rejected': missing"),
        ('{"id": "j", "prompt": "q", "chosen": "x", ', r"bad.jsonl:2: invalid JSON"),
        ('["not", "an", "object"]', "bad.jsonl:2: field '<line>'"),
        (json.dumps(GOOD), "bad.jsonl:2: field 'id': 'i' already used on line 1"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + text + "\n")
    with pytest.raises(ValueError) as err:
        load_preference_jsonl(path)
    assert message in str(err.value)


# --- HealthBench ------------------------------------------------------------------------------------------------


def test_healthbench_counts(healthbench):
    assert len(healthbench) == 500 and len({r.prompt_id for r in healthbench}) == 500
    criteria = [c for r in healthbench for c in r.rubric.criteria]
    assert len(criteria) == 5965 and sum(c.weight < 0 for c in criteria) == 1859
    assert all(c.tags and isinstance(c.weight, float) for c in criteria)
    assert sum(r.ideal_completion is not None for r in healthbench) == 433
    with_refs = [r for r in healthbench if r.ideal_completion is not None and r.reference_completions]
    assert len(with_refs) == 288 and {len(r.reference_completions) for r in with_refs} == {4}
    assert all(r.chat[-1]["role"] == "user" and r.rubric.prompt_id == r.prompt_id for r in healthbench)
    assert Counter(r.theme for r in healthbench)["hedging"] == 116


def test_healthbench_ideal_items(healthbench):
    items = healthbench_ideal_items(healthbench)
    assert len(items) == 288
    # 14 physicians kept one model reference verbatim as the ideal; that copy cannot also be a rejected answer.
    assert Counter(len(item.rejected) for item in items) == {4: 274, 3: 14}
    assert all(item.chosen[0] not in item.rejected for item in items)
    assert sum(Counter(item.subset for item in items).values()) == 288
    assert {item.subset for item in items} <= {r.theme for r in healthbench}


def test_healthbench_bad_file_names_line(tmp_path):
    path = tmp_path / "hb.jsonl"
    path.write_text('{"prompt_id": "x"}\n')
    with pytest.raises(ValueError, match=r"hb\.jsonl:1: bad HealthBench record"):
        load_healthbench(path)


# --- hub row mappers (the downloads themselves are not tested) --------------------------------------------------


def test_map_rewardbench2_row():
    row = {"id": "tied:12", "prompt": "Name a colour.", "chosen": ["red", "blue"], "rejected": ["cat"]}
    item = map_rewardbench2_row({**row, "subset": "Ties", "num_correct": 2, "total_completions": 3})
    assert (item.id, item.subset, item.source) == ("reward-bench-2/tied:12", "Ties", "reward-bench-2")
    assert item.prompt == ({"role": "user", "content": "Name a colour."},)
    assert (item.chosen, item.rejected) == (("red", "blue"), ("cat",))


def test_map_judgebench_row():
    row = {
        "pair_id": "p1",
        "original_id": "10",
        "source": "mmlu-pro-computer science",
        "question": "Q",
        "response_model": "m",
        "response_A": "A text",
        "response_B": "B text",
        "label": "B>A",
    }
    item = map_judgebench_row(row, "gpt")
    assert (item.id, item.chosen, item.rejected, item.subset) == (
        "judgebench/gpt/p1",
        ("B text",),
        ("A text",),
        "knowledge",
    )
    assert map_judgebench_row({**row, "label": "A>B", "source": "livecodebench"}, "claude").chosen == ("A text",)
    assert map_judgebench_row({**row, "source": "other-set"}, "gpt").subset == "other-set"
    with pytest.raises(ValueError, match="'label'"):
        map_judgebench_row({**row, "label": "A=B"}, "gpt")


def test_map_rmbench_row():
    row = {"id": 3, "prompt": "P", "chosen": ["c1", "c2", "c3"], "rejected": ["r1", "r2", "r3"], "domain": "math"}
    item = map_rmbench_row(row)
    assert (item.id, item.subset, item.chosen, item.rejected) == (
        "rm-bench/3",
        "math",
        ("c1", "c2", "c3"),
        ("r1", "r2", "r3"),
    )


def test_hub_loader_refuses_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest for the whole suite
    with pytest.raises(HubUnavailableError, match="allenai/reward-bench-2"):
        load_hub_preferences("reward-bench-2")
    with pytest.raises(KeyError, match="unknown hub preference set"):
        load_hub_preferences("nope")
