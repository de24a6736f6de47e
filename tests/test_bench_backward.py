"""`harness bench backward`: peak memory of a GRPO micro-batch's backward pass, on tiny-random."""

import json

import pytest


def test_backward_bench_measures_each_length_with_and_without_checkpointing(tmp_path):
    from harness.bench.backward import main

    out = tmp_path / "backward.json"
    argv = ["--model", "tiny-random", "--lengths", "16,32", "--batch", "2", "--completion-tokens", "4"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["cores"] >= 1 and report["batch"] == 2
    cells = {(r["length"], r["activation_checkpointing"]) for r in report["results"]}
    assert cells == {(16, False), (16, True), (32, False), (32, True)}
    for r in report["results"]:
        assert r["peak_rss_gb"] >= r["rss_after_load_gb"] > 0 and r["seconds"] > 0
        assert r["backward_extra_gb"] == pytest.approx(r["peak_rss_gb"] - r["rss_after_load_gb"], abs=2e-3)


def test_backward_bench_rejects_a_completion_longer_than_a_row(tmp_path, capsys):
    from harness.bench.backward import main

    with pytest.raises(SystemExit):
        main(["--lengths", "16,32", "--completion-tokens", "16", "--out", str(tmp_path / "x.json")])
    assert "--completion-tokens must lie in 1..15" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
