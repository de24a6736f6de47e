"""Downstream evaluation: local lm-eval tasks, per-item records, resumption, and equality with lm-eval's own CLI."""

import glob
import json
import os
import subprocess
import sys

import pytest
import torch

from harness import catalog
from harness.cache import Cache
from harness.downstream import EvalSettings, evaluate, open_eval_run, task_dir
from harness.store import Run

SETTINGS = EvalSettings(batch_size=2, max_gen_toks=16, device="cpu")


@pytest.fixture(scope="module")
def wordy_policy(tmp_path_factory):
    """tiny-random with re-drawn weights (std 0.6): greedy replies are varied words, not blank lines.

    With the stock tiny model every IFEval check fails on an empty reply, so equal scores would prove little.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = catalog.resolve("tiny-random")
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.6)
    out = tmp_path_factory.mktemp("wordy")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def test_punkt_tab_is_trained_locally(tmp_path, monkeypatch):
    import nltk

    from harness.nltk_data import ensure_punkt_tab

    monkeypatch.setenv("NLTK_DATA", str(tmp_path))
    monkeypatch.setattr(nltk.data, "path", [p for p in nltk.data.path if "nltk_data" not in p])
    where = ensure_punkt_tab()
    assert where == tmp_path / "tokenizers" / "punkt_tab" / "english"
    assert {"abbrev_types.txt", "ortho_context.tab"} <= {p.name for p in where.iterdir()}
    text = "Dr. Smith arrived at 5 p.m. on Monday. It rained! Did it stop? Yes."
    assert nltk.sent_tokenize(text) == ["Dr. Smith arrived at 5 p.m. on Monday.", "It rained!", "Did it stop?", "Yes."]
    assert ensure_punkt_tab() == where  # second call only looks


def test_ifeval_scores_equal_lm_eval_cli(wordy_policy, tmp_path):
    run = Run(tmp_path / "runs", "eq", {"policy": str(wordy_policy)})
    # Ours answers with the `harness` lm-eval model (the default backend); the CLI with lm-eval's own HFLM.
    ours = evaluate(wordy_policy, ["ifeval_local"], 8, run, SETTINGS, cache=Cache(tmp_path / "db"))["ifeval_local"]
    cli = [
        *(sys.executable, "-m", "lm_eval", "--model", "hf", "--tasks", "ifeval_local"),
        *("--model_args", f"pretrained={wordy_policy},dtype=float32", "--include_path", str(task_dir())),
        *("--limit", "8", "--batch_size", "2", "--device", "cpu", "--apply_chat_template"),
        *("--gen_kwargs", "max_gen_toks=16", "--log_samples", "--output_path", str(tmp_path / "cli")),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(open(glob.glob(str(tmp_path / "cli" / "*" / "results_*.json"))[0]).read())
    theirs = results["results"]["ifeval_local"]
    metrics = ["prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc"]
    assert {m: ours[m] for m in metrics} == {m: theirs[f"{m},none"] for m in metrics}
    assert ours["n"] == theirs["sample_len"] == 8
    assert max(ours[m] for m in metrics) > 0, "all-zero scores would make this comparison vacuous"
    cli_samples = [json.loads(line) for line in open(glob.glob(str(tmp_path / "cli" / "*" / "samples_*.jsonl"))[0])]
    stored = {r["doc_id"]: r for r in run.results.records()}
    for sample in cli_samples:
        mine = stored[sample["doc_id"]]
        assert mine["response"] == sample["filtered_resps"][0]
        assert mine["metrics"] == {m: sample[m] for m in metrics}


def test_eval_resumes_and_skips_finished_items(wordy_policy, tmp_path):
    run = Run(tmp_path, "resume", {"policy": str(wordy_policy)})
    first = evaluate(wordy_policy, ["ifeval_local"], 2, run, SETTINGS, chunk_size=1, cache=Cache(tmp_path / "db"))
    kept = run.results.records()
    assert [r["key"] for r in kept] == ["ifeval_local/0", "ifeval_local/1"]
    reopened = Run(tmp_path, "resume", {"policy": str(wordy_policy)})
    evaluate(wordy_policy, ["ifeval_local"], 3, reopened, SETTINGS, chunk_size=1, cache=Cache(tmp_path / "db"))
    assert reopened.results.records()[:2] == kept and len(reopened.results) == 3
    # Nothing is pending, so the policy is never loaded: a missing directory proves no model ran.
    again = evaluate(tmp_path / "no-such-policy", ["ifeval_local"], 2, reopened, SETTINGS)
    assert again == first
    assert json.loads((run.dir / "results.json").read_text())["ifeval_local"]["n"] == 2


def test_math_and_healthbench_tasks_score_each_item(wordy_policy, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_JUDGE", "hf:tiny-random")
    run, policy_dir = open_eval_run(wordy_policy, tmp_path, SETTINGS)
    scores = evaluate(
        policy_dir, ["math_verified", "healthbench_rubric"], 2, run, SETTINGS, cache=Cache(tmp_path / "db")
    )
    records = {r["key"]: r for r in run.results.records()}
    assert set(records) == {"math_verified/0", "math_verified/1", "healthbench_rubric/0", "healthbench_rubric/1"}
    assert all(records[f"math_verified/{i}"]["metrics"]["exact_match"] in (0.0, 1.0) for i in range(2))
    rubric_scores = [records[f"healthbench_rubric/{i}"]["metrics"]["rubric_score"] for i in range(2)]
    assert all(0.0 <= s <= 1.0 for s in rubric_scores)
    assert scores["healthbench_rubric"]["rubric_score"] == pytest.approx(sum(rubric_scores) / 2)
    assert records["math_verified/0"]["item_id"].count("/") == 1  # the problem id, stable across policies


def test_unknown_task_is_named(wordy_policy, tmp_path):
    run = Run(tmp_path, "bad", {})
    with pytest.raises(ValueError, match="ifeval_locl"):
        evaluate(wordy_policy, ["ifeval_locl"], 1, run, SETTINGS)
