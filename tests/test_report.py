"""The report reads stored results only: fake units written through the real executor and run store."""

import numpy as np
import pytest

from harness.executor import run_local
from harness.report import write_report
from harness.results import collect
from harness.store import ResultLog, Run
from harness.study import BASE_LABEL, load_study, plan

SPEC = """\
name: toy
description: A toy study with made-up stored results.
methods: [good, bad, coin]
benchmarks:
  - {name: fake-bench}
downstream: {preset: test, tasks: [math_verified], limit: 30}
seeds: [0, 1]
ablations:
  - {method: coin, grid: {bias: [0.2, 0.8]}}
"""
SKILL = {"good": 0.9, "bad": 0.2, "coin": 0.5, "coin[bias=0.2]": 0.3, "coin[bias=0.8]": 0.7, BASE_LABEL: 0.5}


def fake_runner(unit, where, deps):
    rng = np.random.default_rng(abs(hash(unit.id)) % 2**32)
    p = SKILL[unit.method.label]
    if unit.kind == "static":
        run = Run(where, "scores", {})
        for i in range(40):
            won = rng.random() < p
            run.results.append(
                {"key": f"i{i}", "id": f"i{i}", "subset": "ab"[i % 2], "chosen_scores": [1.0],
                 "rejected_scores": [0.0, 0.5, 2.0 - won * 2], "credit": float(won), "pair_credit": float(won)}
            )  # fmt: skip
        if unit.method.label == "coin":  # a method that trains itself while fitting (co-evolution) logs telemetry
            fit = ResultLog(where / "fit" / "telemetry.jsonl")
            for step in range(3):
                fit.append({"key": f"f{step}", "step": step, "role": "generator", "pool.criteria": float(step)})
            return {"fit_dir": str(where / "fit")}
        return {}
    if unit.kind == "train":
        run = Run(where, "train", {})
        steps = ResultLog(run.dir / "steps.jsonl")
        for step in range(4):
            steps.append({"key": f"s{step}", "step": step, "proxy_reward": p * step, "gold_accuracy": 1 - p * step / 4})
        telemetry = ResultLog(run.dir / "telemetry.jsonl")
        for step in range(4):
            telemetry.append({"key": f"t{step}", "step": step, "label_only_share": 0.2 / (step + 1)})
        return {"policy": str(run.dir), "run_dir": str(run.dir)}
    run = Run(where, "eval", {})
    for i in range(30):
        # Downstream skill is the reverse of static skill: the report must show the inversion.
        won = rng.random() < 1 - p
        run.results.append(
            {"key": f"d{i}", "task": "math_verified", "item_id": f"q{i}", "metrics": {"exact_match": won}}
        )
    return {"run_dir": str(run.dir)}


@pytest.fixture
def stored_study(tmp_path):
    (tmp_path / "study.yaml").write_text(SPEC)
    study = load_study(tmp_path)
    run_local(plan(study), tmp_path / "runs", fake_runner)
    return tmp_path


def test_collect_reads_every_kind_of_unit(stored_study):
    res = collect(stored_study / "runs")
    assert set(res.static.method) == set(SKILL) - {BASE_LABEL}
    assert len(res.static) == 5 * 40
    assert set(res.downstream.method) == {"good", "bad", "coin", BASE_LABEL}
    assert len(res.downstream) == 4 * 2 * 30  # (methods + untrained base) x seeds x items
    assert {"proxy_reward", "gold_accuracy"} <= set(res.curves.columns)
    assert "label_only_share" in res.telemetry.columns
    fit_rows = res.telemetry.dropna(subset=["pool.criteria"])
    assert set(fit_rows.method) == {"coin"} and list(fit_rows.step) == [0, 1, 2]


def test_report_has_every_section_and_its_figures(stored_study):
    path = write_report(stored_study, stored_study / "runs")
    text = path.read_text()
    for section in (
        "Static preference benchmarks",
        "Downstream",
        "inversion plot",
        "Significance",
        "Ablations",
        "Training curves",
        "Rubric telemetry",
        "Provenance",
    ):
        assert section in text, section
    (stored_study / "figures" / "from-an-older-report.png").write_bytes(b"")
    write_report(stored_study, stored_study / "runs")  # a re-run removes figures it no longer draws
    figures = sorted(p.name for p in (stored_study / "figures").glob("*.png"))
    assert "from-an-older-report.png" not in figures
    assert "inversion.png" in figures and "curves-good.png" in figures and "ablation-0.png" in figures
    for name in figures:
        assert f"figures/{name}" in text
    md_tables = sum(line.startswith("|---") for line in text.splitlines())
    assert (stored_study / "report.html").read_text().count("<table>") == md_tables > 0
    # The findings restate what the CIs show, by rule: good (90% wins) is above the 1-in-4 chance of the toy items.
    findings = text.split("## What these numbers support")[1].split("## Static")[0]
    assert "above chance (0.250) for good, coin" in findings
    assert "overall paired comparisons are significant" in findings
    assert "3 methods: Spearman -1.000 [-1.00, -1.00]; p = 0.333, so these data neither show nor rule out" in findings
    # The inverted toy data must come out as a negative rank correlation.
    spearman = next(line for line in text.splitlines() if line.startswith("| spearman"))
    assert "| -1.000" in spearman
    # Good beats bad on the static benchmark, significantly after Holm.
    row = next(line for line in text.splitlines() if "good vs bad | all" in line and "static" in line)
    assert row.split("|")[-3].strip() == "yes"
    # Trained policies are compared with the untrained base; subsets under MIN_SUBSET_ITEMS items get no row.
    assert any(f"good vs {BASE_LABEL} | all" in line for line in text.splitlines())
    assert "| a |" in text  # the 20-item subsets of the toy benchmark keep their rows


def test_report_without_results_says_what_to_run(tmp_path):
    (tmp_path / "study.yaml").write_text(SPEC)
    with pytest.raises(FileNotFoundError, match="harness run"):
        write_report(tmp_path, tmp_path / "runs")
