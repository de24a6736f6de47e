"""The rubric baselines and bt_rm end to end on real HealthBench items, with tiny-random as every model.

`external_rubrics` talks HTTP to a real `harness serve` subprocess (its offline default) and, where a test needs
rubrics that parse, to a real in-process server whose model is `ScriptedWriter`, a fake that answers by what the
chat asks for. Nothing is mocked or patched.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import urllib.error
import urllib.request
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.data import healthbench_file, load_healthbench
from harness.judge import Judge
from harness.methods import FitContext, RubricMethod, create_method
from harness.serve import ChatService, make_http_server
from harness.types import user_chat

GOOD_RUBRIC = [
    {"criterion": "Advises seeing a doctor", "weight": 3},
    {"criterion": "Gives one concrete next step", "weight": 2},
    {"criterion": "Claims a certainty it cannot have", "weight": -2},
]
NEW_CRITERIA = [
    {"criterion": "Uses the word 'today'", "weight": 2},
    {"criterion": "advises seeing a doctor", "weight": 1},  # already in the rubric (case aside)
]


class ScriptedWriter:
    """A fake writer model: a rubric (unparseable on seed 0), separating criteria, or a sampled reply."""

    model_id = "scripted-writer"

    def __init__(self):
        self.calls = Counter()

    def generate(self, chats, params):
        return [self.reply(chat[-1]["content"], params.seed) for chat in chats]

    def reply(self, text, seed):
        if text.startswith("Write a rubric"):
            self.calls["rubric"] += 1
            return "Sure, here is a rubric for you:" if seed == 0 else json.dumps(GOOD_RUBRIC)
        if text.startswith("The rubric below scores two replies"):
            self.calls["refine"] += 1
            return "```json\n" + json.dumps(NEW_CRITERIA) + "\n```"
        self.calls["response"] += 1
        return f"Reply {seed}: rest and drink water" + (", and see a doctor today." if seed % 2 else ".")


def serve_in_thread(service):
    server = make_http_server(service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}"


@pytest.fixture
def writer():
    fake = ScriptedWriter()
    server, url = serve_in_thread(ChatService(fake, "scripted"))
    yield fake, f"{url}/v1"
    server.shutdown()
    server.server_close()


def healthbench_records(n=3):
    """The n HealthBench records with an ideal completion and the shortest conversations (fast on any model)."""
    records = [r for r in load_healthbench() if r.ideal_completion]
    return sorted(records, key=lambda r: sum(len(m["content"]) for m in r.chat))[:n]


# --- expert_rubrics -------------------------------------------------------------------------------------------


def test_expert_rubrics_end_to_end_on_healthbench(tiny_backend, caplog):
    records = healthbench_records(3)
    method = create_method("expert_rubrics", judge=tiny_backend, cache=False)
    assert isinstance(method, RubricMethod)
    prompts = [list(r.chat) for r in records] + [user_chat("A prompt HealthBench has never seen.")]
    responses = [r.ideal_completion for r in records] + ["Some answer."]
    with caplog.at_level(logging.WARNING):
        scores = method.score(prompts, responses)
    expected = Judge(tiny_backend, progress=False).score(
        [(list(r.chat), r.ideal_completion, r.rubric) for r in records]
    )
    assert scores[:3] == pytest.approx(expected)
    assert all(0 <= s <= 1 for s in scores[:3])
    assert math.isnan(scores[3])
    assert "1 of 4 prompts have no expert rubric" in caplog.text
    assert method.report() == {"responses": 4, "no_expert_rubric": 1, "unscored_by_judge": 0}


def test_expert_rubrics_match_by_prompt_id_or_exact_conversation():
    record = healthbench_records(1)[0]
    method = create_method("expert_rubrics")
    by_chat, by_id, edited, unknown_id = method.rubrics(
        [
            list(record.chat),
            [{"role": "user", "content": "anything", "prompt_id": record.prompt_id}],
            [{**m, "content": m["content"] + " "} for m in record.chat],  # not the same conversation
            [{"role": "user", "content": record.chat[0]["content"], "prompt_id": "no-such-id"}],
        ]
    )
    assert by_chat == by_id == record.rubric
    assert edited is None and unknown_id is None


def test_expert_rubrics_read_a_given_file_or_url_once(tmp_path, monkeypatch):
    lines = healthbench_file().read_text(encoding="utf-8").splitlines()[:2]
    (tmp_path / "hb.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    first = load_healthbench(tmp_path / "hb.jsonl")[0]
    assert create_method("expert_rubrics", data=str(tmp_path / "hb.jsonl")).index.lookup(first.chat) == first.rubric
    with pytest.raises(FileNotFoundError, match="nope.jsonl does not exist"):
        _ = create_method("expert_rubrics", data=str(tmp_path / "nope.jsonl")).index

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hb.jsonl"
    try:
        assert len(create_method("expert_rubrics", data=url).index) == 2
    finally:
        server.shutdown()
        server.server_close()
    # The download is cached: with the server gone, the same URL still loads.
    assert len(create_method("expert_rubrics", data=url).index) == 2


def test_expert_rubrics_reject_an_unknown_aggregate():
    with pytest.raises(ValueError, match="unknown aggregate 'mean'"):
        create_method("expert_rubrics", aggregate="mean")


# --- external_rubrics -----------------------------------------------------------------------------------------


def test_external_rubrics_default_starts_and_stops_a_real_server(tiny_backend, tmp_path):
    """tiny-random writes gibberish: every attempt fails to parse, is counted, and scores NaN, never 0."""
    records = healthbench_records(2)
    prompts = [list(r.chat) for r in records]
    options = {"serve": "hf:tiny-random", "judge": tiny_backend, "max_new_tokens": 24, "retries": 1}
    with create_method("external_rubrics", cache=str(tmp_path / "c.sqlite"), **options) as method:
        scores = method.score(prompts, [r.ideal_completion for r in records])
        base_url = method.generator().inner.base_url
        assert base_url.startswith("http://127.0.0.1:")
        rubrics = method.rubrics(prompts)
    report = method.report()
    assert [math.isnan(s) for s in scores] == [r is None for r in rubrics]
    assert report["no_rubric"] == sum(r is None for r in rubrics) > 0
    assert report["unscored_no_rubric"] == report["no_rubric"]
    # Two attempts (one retry) for each prompt whose first output failed; nothing more.
    assert report["rubric_parse"]["failed"] >= 2 and report["rubric_parse"]["ok"] + report["no_rubric"] == 2
    assert report["rubric_parse"]["ok"] + report["rubric_parse"]["failed"] <= 4
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base_url}/models", timeout=5)
    # A rerun finds every generation in the cache and never starts a server.
    again = create_method("external_rubrics", cache=str(tmp_path / "c.sqlite"), **options)
    assert again.rubrics(prompts) == rubrics and not again.generator().inner.started
    assert again.report()["rubric_parse"] == report["rubric_parse"]


def test_external_rubrics_retry_with_new_seeds_and_cache_everything(writer, tiny_backend, tmp_path):
    fake, url = writer
    records = healthbench_records(2)
    prompts = [list(r.chat) for r in records]
    responses = [r.ideal_completion for r in records]
    options = {"base_url": url, "model": "scripted", "judge": tiny_backend, "cache": str(tmp_path / "c.sqlite")}
    method = create_method("external_rubrics", **options)
    scores = method.score(prompts, responses)
    rubrics = method.rubrics(prompts)
    assert all(0 <= s <= 1 for s in scores)
    assert [[c.text for c in r.criteria] for r in rubrics] == [[c["criterion"] for c in GOOD_RUBRIC]] * 2
    assert rubrics[0].source.startswith("external-rubric-v1:")
    report = method.report()
    assert report["rubric_parse"] == {"ok": 2, "failed": 2, "failure_rate": 0.5, "by_reason": {"no_criteria": 2}}
    assert fake.calls == {"rubric": 4}  # seed 0 failed for both prompts, seed 1 parsed
    again = create_method("external_rubrics", **options)
    assert again.score(prompts, responses) == scores
    assert fake.calls == {"rubric": 4}  # every generation came from the cache


def test_refinement_adds_only_new_criteria_the_judge_can_tell_apart(writer, tiny_backend):
    fake, url = writer
    record = healthbench_records(1)[0]
    options = {"base_url": url, "model": "scripted", "judge": tiny_backend, "cache": False, "refine": 2}
    method = create_method("external_rubrics", samples=4, verify_margin=1e-9, **options)
    [rubric] = method.rubrics([list(record.chat)])
    texts = [c.text for c in rubric.criteria]
    assert texts == [c["criterion"] for c in GOOD_RUBRIC] + ["Uses the word 'today'"]
    assert rubric.criteria[-1].tags == ("refine:1",)
    report = method.report()
    # Round 1 adds the new criterion; round 2 proposes the same two, now both already in the rubric.
    assert report["refine_rounds"] == 2 and report["refine_added"] == 1 and report["refine_duplicate"] == 3
    assert fake.calls["response"] == 4 and fake.calls["refine"] == 2

    strict = create_method("external_rubrics", samples=4, verify_margin=0.5, **options)
    [unchanged] = strict.rubrics([list(record.chat)])
    assert [c.text for c in unchanged.criteria] == [c["criterion"] for c in GOOD_RUBRIC]
    assert strict.report()["refine_indistinct"] == 2


def test_external_rubrics_check_their_options():
    with pytest.raises(ValueError, match="base_url needs model"):
        create_method("external_rubrics", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="refinement needs samples >= 2"):
        create_method("external_rubrics", refine=1, samples=1)


# --- bt_rm ----------------------------------------------------------------------------------------------------


def test_bt_rm_end_to_end_on_healthbench(tmp_path):
    from harness.data import healthbench_ideal_items
    from harness.splits import EVAL, fold

    method = create_method("bt_rm", base="tiny-random", preset="test")
    method.fit(FitContext(workdir=tmp_path, seed=0))  # the default: HealthBench's train fold
    items = [it for it in healthbench_ideal_items() if fold(it.id) == EVAL][:3]
    prompts = [list(it.prompt) for it in items for _ in (0, 1)]
    responses = [r for it in items for r in (it.chosen[0], it.rejected[0])]
    scores = method.score(prompts, responses)
    assert len(scores) == 6 and all(math.isfinite(s) for s in scores)
    assert method.score(prompts[:2], responses[:2]) == pytest.approx(scores[:2], abs=1e-5)
