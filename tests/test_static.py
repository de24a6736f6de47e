"""Benchmark registry, build cache, JSONL benchmarks, and `harness bench static` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.bench.static import available_benchmarks, build_benchmark, load_benchmark
from harness.bench.static_run import bootstrap_ci, chance_levels, expert_agreement, metrics_table, summarise_run
from harness.cli import main
from harness.data import save_preference_jsonl
from harness.types import PreferenceItem, user_chat


def _items(n, n_rejected=1, subset="s"):
    return [
        PreferenceItem(
            f"i{k}", tuple(user_chat(f"q{k}")), (f"good {k}",), tuple(f"bad {k}.{j}" for j in range(n_rejected)), subset
        )
        for k in range(n)
    ]


def test_registry_lists_builtins_like_plugins():
    infos = {b.name: b for b in available_benchmarks()}
    assert {"healthbench-ideal", "precise-if", "math-verified", "llmbar", "pandalm"} <= set(infos)
    assert infos["healthbench-ideal"].items == 288 and not infos["healthbench-ideal"].cached
    assert infos["precise-if"].cached and infos["math-verified"].cached
    assert infos["healthbench-ideal"].package == "reward-harness"
    with pytest.raises(KeyError, match="unknown benchmark 'nope'.*healthbench-ideal"):
        load_benchmark("nope")


def test_healthbench_ideal_limit_and_shape():
    items = load_benchmark("healthbench-ideal", limit=5)
    assert len(items) == 5 and all(len(it.chosen) == 1 and it.rejected for it in items)
    with pytest.raises(ValueError, match="limit"):
        load_benchmark("healthbench-ideal", limit=0)


def test_jsonl_path_is_a_benchmark(tmp_path):
    path = tmp_path / "mine.jsonl"
    save_preference_jsonl(_items(3), path)
    assert load_benchmark(str(path)) == _items(3)
    assert load_benchmark(str(path), limit=2) == _items(2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "prompt": "p", "chosen": "a"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: field 'rejected'"):
        load_benchmark(str(bad))


def test_shared_sets_need_a_root(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_DATA_ROOT", raising=False)
    with pytest.raises(ValueError, match="--data-root"):
        load_benchmark("llmbar")
    with pytest.raises(FileNotFoundError, match="llmbar"):
        load_benchmark("llmbar", root=str(tmp_path))


def test_sampled_benchmark_build_is_cached(tmp_path):
    # tiny-random never solves a problem, so every item gets the labelled template-written chosen response.
    options = {"model": "tiny-random", "n_problems": 3, "n_samples": 4, "max_new_tokens": 6}
    first = build_benchmark("math-verified", limit=2, cache_root=tmp_path, **options)
    assert not first.from_cache and len(first.items) == 2
    assert {it.subset for it in first.items} == {"template"} and all(len(it.rejected) == 3 for it in first.items)
    assert first.stats["by_subset"]["template"] == 2
    again = build_benchmark("math-verified", limit=2, cache_root=tmp_path, **options)
    assert again.from_cache and again.items == first.items and again.stats == first.stats
    assert again.seconds < first.seconds
    info = json.loads(first.path.with_name(first.path.name.replace(".jsonl", ".build.json")).read_text())
    assert info["n_items"] == 2 and info["options"] == options


def test_bootstrap_ci_edge_cases_and_seeding():
    rng = np.random.default_rng(0)
    assert bootstrap_ci([np.array([1.0, 1.0, 1.0])], rng) == [1.0, 1.0]
    assert all(math.isnan(v) for v in bootstrap_ci([np.array([1.0])], rng))
    data = [np.array([0.0, 1.0, 1.0, 0.0, 1.0]), np.array([0.25, 0.0, 0.0, 1.0])]
    a = bootstrap_ci(data, np.random.default_rng(3))
    assert a == bootstrap_ci(data, np.random.default_rng(3))
    point = np.mean([d.mean() for d in data])
    assert a[0] <= point <= a[1] and a[0] < a[1]


def test_chance_levels_and_expert_agreement():
    items = _items(2, n_rejected=3) + _items(1, n_rejected=1, subset="t")
    levels = chance_levels(items)
    assert levels["s"]["best_of_n"] == 0.25 and levels["t"]["best_of_n"] == 0.5
    assert levels["macro"]["best_of_n"] == pytest.approx(0.375)
    records = [
        {"method": "expert_rubrics", "id": "a", "chosen_scores": [3.0], "rejected_scores": [1.0, 2.0]},
        {"method": "length", "id": "a", "chosen_scores": [9.0], "rejected_scores": [1.0, 10.0]},
    ]
    got = expert_agreement(records, "length")
    # pairs (3 vs 1) agree, (3 vs 2) disagree, (1 vs 2) agree -> 2/3
    assert got == {"value": pytest.approx(2 / 3), "pairs": 3, "expert_ties": 0, "unscored": 0}
    assert expert_agreement(records, "expert_rubrics") is None and expert_agreement(records, "random") is None


def test_summarise_run_counts_unscored_apart():
    records = [
        {"method": "m", "id": "a", "subset": "s", "credit": 1.0, "pair_credit": 1.0},
        {"method": "m", "id": "b", "subset": "s", "credit": 0.0, "pair_credit": 0.5},
        {"method": "m", "id": "c", "subset": "t", "credit": float("nan"), "pair_credit": float("nan")},
        {"method": "m", "id": "d", "subset": "t", "credit": 1.0, "pair_credit": 1.0},
    ]
    m = summarise_run(records, ["m"])["m"]
    assert m["best_of_n"]["s"]["value"] == 0.5 and m["best_of_n"]["t"] == {
        "value": 1.0,
        "ci": pytest.approx([float("nan")] * 2, nan_ok=True),
        "n": 1,
        "unscored": 1,
    }
    assert m["best_of_n"]["macro"]["value"] == 0.75 and m["best_of_n"]["macro"]["unscored"] == 1
    assert m["pairwise"]["macro"]["value"] == pytest.approx((0.75 + 1.0) / 2)


def test_bench_static_cli_end_to_end_and_resume(tmp_path, capsys):
    argv = [
        "bench",
        "static",
        "--method",
        "length",
        "--method",
        "random",
        "--benchmark",
        "healthbench-ideal",
        "--runs",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "best-of-N [95% CI]" in out and "random  macro" in out and "length  macro" in out
    (run_dir,) = tmp_path.iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_items"] == 288
    random_macro = metrics["methods"]["random"]["best_of_n"]["macro"]
    low, high = random_macro["ci"]
    assert low <= metrics["chance"]["macro"]["best_of_n"] <= high  # the random control lands at chance
    lines = (run_dir / "items.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 288
    assert main(argv) == 0  # a second run resumes: nothing is scored twice
    assert (run_dir / "items.jsonl").read_text().splitlines() == lines
    headers, rows = metrics_table(metrics)
    assert len(rows) == 2 * (len(metrics["chance"])) and headers[3].startswith("best-of-N")


def test_bench_static_cli_reports_bad_input(tmp_path, capsys):
    assert main(["bench", "static", "--method", "length", "--benchmark", "nope", "--runs", str(tmp_path)]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    assert main(["benchmarks"]) == 0
    assert "healthbench-ideal  288" in capsys.readouterr().out
    assert main(["benchmarks", "--build", "healthbench-ideal", "--limit", "3"]) == 0
    assert "healthbench-ideal: 3 items, built in" in capsys.readouterr().out


def test_select_split_keeps_one_fold():
    from harness.bench.static_run import select_split
    from harness.splits import fold

    items = load_benchmark("healthbench-ideal")
    evals, train = select_split(items, "eval"), select_split(items, "train")
    assert len(evals) + len(train) == len(items) and evals and train
    assert all(fold(it.id) == "eval" for it in evals)
    assert select_split(items, "all") == items
    with pytest.raises(ValueError, match="split"):
        select_split(items, "test")


def test_bench_static_method_args_give_a_labelled_method_of_their_own(tmp_path, capsys):
    base = ["bench", "static", "--benchmark", "healthbench-ideal", "--limit", "12", "--runs", str(tmp_path)]
    assert main([*base, "--method", "random", "--method", "random", "--method-arg", "random.seed=3"]) == 2
    assert main([*base, "--method", "random"]) == 0
    assert main([*base, "--method", "random", "--method-arg", "random.seed=3"]) == 0  # the same run, a new label
    assert "random[seed=3]  macro" in capsys.readouterr().out
    (run_dir,) = tmp_path.iterdir()
    scores = {}
    for record in map(json.loads, (run_dir / "items.jsonl").read_text().splitlines()):
        scores.setdefault(record["method"], []).append(record["chosen_scores"] + record["rejected_scores"])
    assert set(scores) == {"random", "random[seed=3]"} and scores["random"] != scores["random[seed=3]"]
    assert set(json.loads((run_dir / "metrics.json").read_text())["methods"]) == {"random[seed=3]"}
    assert main([*base, "--method", "length", "--method-arg", "bt_rm.epochs=2"]) == 2
    assert (
        "--method-arg 'bt_rm.epochs=2': expected METHOD.KEY=VALUE with METHOD one of ['length']"
        in capsys.readouterr().err
    )
