import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cache import Cache, CachedBackend, content_key
from harness.store import ResultLog, Run, atomic_write_text, run_pending
from harness.types import GenerationParams, user_chat

SCRIPT = Path(__file__).parent / "scripts" / "count_run.py"


def test_result_log_appends_and_rejects_duplicates(tmp_path):
    log = ResultLog(tmp_path / "items.jsonl")
    log.append({"key": "a", "v": 1})
    with pytest.raises(ValueError, match="already recorded"):
        log.append({"key": "a", "v": 2})
    with pytest.raises(ValueError, match="'key'"):
        log.append({"v": 3})
    assert [r["v"] for r in ResultLog(tmp_path / "items.jsonl").records()] == [1]


def test_torn_last_line_is_dropped_and_file_repaired(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"key": "a", "v": 1}\n{"key": "b", "v"')
    log = ResultLog(path)
    assert "a" in log and "b" not in log
    log.append({"key": "b", "v": 2})
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["a", "b"]


def test_corrupt_finished_line_names_file_and_line(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"key": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"items.jsonl:2"):
        ResultLog(path)


def test_run_resumes_only_with_same_config(tmp_path):
    run = Run(tmp_path, "r1", config={"seed": 1})
    run.note(models={"m": "abc"})
    again = Run(tmp_path, "r1", config={"seed": 1})
    assert again.manifest["models"] == {"m": "abc"}
    assert again.manifest["environment"]["packages"]["reward-harness"]
    with pytest.raises(ValueError, match=r"different config \(fields \['seed'\]\)"):
        Run(tmp_path, "r1", config={"seed": 2})


def test_run_pending_skips_finished_items(tmp_path):
    log = ResultLog(tmp_path / "items.jsonl")
    seen = []

    def compute(batch):
        seen.extend(batch)
        return [{"double": 2 * i} for i in batch]

    run_pending(log, [1, 2, 3], key=str, compute=compute, batch_size=2)
    records = run_pending(log, [1, 2, 3, 4], key=str, compute=compute, batch_size=2)
    assert seen == [1, 2, 3, 4]
    assert [r["double"] for r in records] == [2, 4, 6, 8]


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert list(tmp_path.iterdir()) == [path]


def test_sigkill_and_restart_loses_and_duplicates_nothing(tmp_path):
    n_items = 30
    log_path = tmp_path / "count" / "items.jsonl"
    cmd = [sys.executable, str(SCRIPT), str(tmp_path), str(n_items), "0.05"]
    for kill_after in (3, 9, 17):  # kill three times at different points
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            if log_path.exists() and log_path.read_text().count("\n") >= kill_after:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
    finished_before = log_path.read_text().count("\n")
    assert 17 <= finished_before < n_items
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert sorted(r["item"] for r in records) == list(range(n_items))
    assert all(r["square"] == r["item"] ** 2 for r in records)
    assert len({r["key"] for r in records}) == n_items


class CountingBackend:
    """A real (if trivial) backend that counts how often it is asked to compute."""

    model_id = "counting"

    def __init__(self):
        self.generated = 0
        self.scored = 0

    def generate(self, chats, params):
        self.generated += len(chats)
        return [f"{c[-1]['content']}|{params.seed}" for c in chats]

    def logprobs(self, chats, continuations):
        self.scored += len(chats)
        return [-float(len(t)) for t in continuations]


def test_cached_backend_recomputes_nothing_across_processes(tmp_path):
    inner = CountingBackend()
    backend = CachedBackend(inner, Cache(tmp_path / "cache.sqlite"))
    chats = [user_chat("a"), user_chat("b")]
    params = GenerationParams(seed=3)
    assert backend.generate(chats, params) == ["a|3", "b|3"]
    assert backend.logprobs(chats, ["x", "yy"]) == [-1.0, -2.0]
    reopened = CachedBackend(inner, Cache(tmp_path / "cache.sqlite"))
    assert reopened.generate(chats + [user_chat("c")], params) == ["a|3", "b|3", "c|3"]
    assert reopened.logprobs(chats, ["x", "yy"]) == [-1.0, -2.0]
    assert (inner.generated, inner.scored) == (3, 2)
    # Different sampling parameters are a different cache entry.
    reopened.generate(chats[:1], GenerationParams(seed=4))
    assert inner.generated == 4


def test_content_key_is_order_independent_for_fields():
    assert content_key("g", a=1, b=[1, 2]) == content_key("g", b=[1, 2], a=1)
