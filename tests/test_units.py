"""The real study units, end to end on tiny-random: static scoring, GRPO training, lm-eval, the base model, a report."""

import json

from harness.executor import run_local
from harness.report import write_report
from harness.results import collect
from harness.study import BASE_LABEL, load_study, plan
from harness.units import run_study_unit

SPEC = """\
name: tiny
methods:
  - length
  - {name: evolm, label: evolm-tiny, kwargs: {preset: test}}
benchmarks:
  - {name: healthbench-ideal, limit: 2, split: eval}
downstream:
  base_model: tiny-random
  preset: test
  methods: [length]
  tasks: [ifeval_local]
  limit: 2
  max_gen_toks: 8
seeds: [0]
"""


def test_a_tiny_study_runs_every_unit_kind_and_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_JUDGE", "hf:tiny-random")
    (tmp_path / "study.yaml").write_text(SPEC)
    study = load_study(tmp_path)
    units = plan(study)
    records = run_local(units, tmp_path / "runs", run_study_unit, isolate=True)  # as `harness run` does
    assert len(records) == len(units) == 5  # 2 static, 1 train, 1 eval of it, 1 eval of the base model

    by_id = {r["id"]: r for r in records}
    static = [by_id[u.id]["summary"] for u in units if u.kind == "static"]
    assert [s["items"] for s in static] == [2, 2]
    assert "fit_dir" in static[1] and "fit_dir" not in static[0]  # evolm trained while fitting; length did not
    base = next(u for u in units if u.method.label == BASE_LABEL)
    assert by_id[base.id]["summary"]["scores"]  # the untrained base model was evaluated without a training unit

    res = collect(tmp_path / "runs")
    assert set(res.downstream.method) == {"length", BASE_LABEL}
    assert set(res.telemetry.source) == {"fit"} and set(res.telemetry.method) == {"evolm-tiny"}
    text = write_report(tmp_path, tmp_path / "runs").read_text()
    assert "## What these numbers support" in text and "## Rubric telemetry" in text

    # A second run finds every unit finished and recomputes nothing.
    before = {u.id: json.loads((tmp_path / "runs" / u.id / "unit.json").read_text())["finished_at"] for u in units}
    run_local(units, tmp_path / "runs", run_study_unit)
    after = {u.id: json.loads((tmp_path / "runs" / u.id / "unit.json").read_text())["finished_at"] for u in units}
    assert after == before
