"""`harness compare`: paired tests between policies evaluated by `harness eval`, outside a study."""

import json

import pytest

from harness.cli import main
from harness.compare import compare_runs, label_of, load_scores
from harness.store import ResultLog


def eval_run(path, policy, scores, task="math_verified"):
    """An eval run directory as `harness eval` leaves it: manifest plus one record per item."""
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"config": {"policy": str(policy)}}))
    log = ResultLog(path / "items.jsonl")
    metric = {"math_verified": "exact_match", "ifeval_local": "prompt_level_strict_acc"}[task]
    for i, score in enumerate(scores):
        log.append({"key": f"{task}/{i}", "task": task, "doc_id": i, "item_id": str(i), "metrics": {metric: score}})
    return path


def test_runs_are_labelled_by_the_policy_harness_eval_named_them_after(tmp_path):
    run = eval_run(tmp_path / "eval-train-evolm-cpu-s0-4745d0e3", "runs/train-evolm-cpu-s0/models/policy", [1.0])
    assert label_of(run) == "train-evolm-cpu-s0"
    assert label_of(eval_run(tmp_path / "eval-smollm2-135m-b945d17e", "/cache/smollm2", [1.0])) == "smollm2-135m"
    assert label_of(eval_run(tmp_path / "mine", "x", [1.0])) == "mine"  # not named by harness eval: the folder


def test_paired_comparison_on_the_items_both_policies_answered(tmp_path):
    a = eval_run(tmp_path / "a", "runs/train-a/policy", [1.0] * 12 + [0.0] * 8)
    b = eval_run(tmp_path / "b", "runs/train-b/policy", [0.0] * 12 + [0.0] * 4)  # evaluated with a smaller limit
    frame = load_scores({"a": a, "b": b})
    means, rows = compare_runs(frame)
    assert [(m["method"], m["n"]) for m in means] == [("a", 20), ("b", 16)]
    (row,) = rows
    assert row["comparison"] == "a vs b" and row["task"] == "math_verified"
    assert row["n"] == 16 and row["n_dropped"] == 4  # only items both were scored on are paired
    assert row["estimate"] == pytest.approx(12 / 16) and row["test"] == "mcnemar"
    assert row["p"] == pytest.approx(2 * 0.5**12)  # exact McNemar: 12 discordant pairs, all one way
    assert row["reject"]


def test_instance_level_metrics_score_an_item_by_their_mean(tmp_path):
    a = eval_run(tmp_path / "a", "a", [[True, False], [True, True]], task="ifeval_local")
    b = eval_run(tmp_path / "b", "b", [[False, False], [True, True]], task="ifeval_local")
    frame = load_scores({"a": a, "b": b})
    assert frame[frame.method == "a"].score.tolist() == [0.5, 1.0]
    means, rows = compare_runs(frame)
    assert rows[0]["test"] == "permutation" and rows[0]["estimate"] == pytest.approx(0.25)


def test_a_directory_without_evaluated_items_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no evaluated items"):
        load_scores({"x": tmp_path / "empty"})
    with pytest.raises(ValueError, match="typo: no evaluated items"):
        load_scores({"x": tmp_path / "typo"})
    assert not (tmp_path / "typo").exists()  # reading created nothing


def test_cli_writes_the_markdown_tables(tmp_path, capsys):
    a = eval_run(tmp_path / "eval-train-a-0123abcd", "runs/train-a/policy", [1.0, 1.0, 0.0])
    b = eval_run(tmp_path / "eval-train-b-4567abcd", "runs/train-b/policy", [0.0, 1.0, 0.0])
    out = tmp_path / "compare.md"
    assert main(["compare", str(a), f"B={b}", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| math_verified | train-a vs B | 3 |" in text and "| math_verified | B | 3 | 0.333" in text
    assert main(["compare", str(a)]) == 2  # one run: nothing to compare
