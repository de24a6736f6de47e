import json
import os

import pytest

from harness.executor import UNIT_FILE, finished, run_local, waves
from harness.study import BASE_LABEL, SpecError, ablation_methods, load_study, plan

SPEC = """\
name: toy
methods:
  - length
  - {name: random, kwargs: {seed: 1}}
benchmarks:
  - {name: healthbench-ideal, limit: 5}
downstream: {preset: test, tasks: [ifeval_local, math_verified], limit: 3}
seeds: [0, 1]
ablations:
  - {method: random, grid: {seed: [2, 3]}}
"""


def write_spec(tmp_path, text=SPEC):
    (tmp_path / "study.yaml").write_text(text)
    return tmp_path


def test_plan_expands_methods_ablations_seeds_and_tasks(tmp_path):
    units = plan(load_study(write_spec(tmp_path)))
    kinds = [u.kind for u in units]
    # 2 methods + 2 ablation points score the benchmark; only the 2 methods train (2 seeds) and evaluate (2 tasks),
    # and the untrained base model is evaluated on the same tasks and seeds, needing no training.
    assert kinds.count("static") == 4
    assert kinds.count("train") == 4
    assert kinds.count("eval") == 8 + 4
    base = [u for u in units if u.method.label == BASE_LABEL]
    assert len(base) == 4 and all(u.needs == () and u.config["policy"] == "smollm2-135m" for u in base)
    labels = {u.method.label for u in units if u.kind == "static"}
    assert labels == {"length", "random", "random[seed=2]", "random[seed=3]"}
    assert len({u.id for u in units}) == len(units)
    # Ids are stable across parses, so a re-run finds its finished units.
    assert [u.id for u in units] == [u.id for u in plan(load_study(tmp_path))]
    for unit in units:
        if unit.kind == "eval" and unit not in base:
            assert unit.needs == (unit.config["policy"],)


def test_downstream_methods_limit_which_methods_train(tmp_path):
    spec = SPEC.replace("tasks: [ifeval_local, math_verified]", "methods: [random], tasks: [math_verified]")
    units = plan(load_study(write_spec(tmp_path, spec)))
    assert {u.method.label for u in units if u.kind == "train"} == {"random"}
    with pytest.raises(SpecError, match="unknown methods"):
        load_study(write_spec(tmp_path, spec.replace("methods: [random]", "methods: [nope]")))


def test_unknown_key_is_reported_with_file_and_line(tmp_path):
    bad = SPEC.replace("downstream: {preset", "downstream: {presets")
    with pytest.raises(SpecError, match=r"study.yaml:7: unknown key 'presets' in downstream"):
        load_study(write_spec(tmp_path, bad))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("seeds: [0, 1]", "seeds: [zero]"), "seeds must be a non-empty list of integers"),
        (("limit: 5", "limit: -5"), "limit must be a positive integer"),
        (("seed: [2, 3]", "seed: []"), "grid must map kwargs to non-empty lists"),
        (("  - length\n", "  - length\n  - length\n"), "labels must be unique"),
    ],
)
def test_bad_values_are_named(tmp_path, change, message):
    with pytest.raises(SpecError, match=message):
        load_study(write_spec(tmp_path, SPEC.replace(*change)))


def recording_runner(calls, fail_on=None):
    def runner(unit, where, deps):
        calls.append(unit.id)
        if fail_on and fail_on in unit.id:
            raise RuntimeError("boom")
        for need, path in deps.items():
            assert (path / UNIT_FILE).is_file(), f"{need} should have finished before {unit.id}"
        (where / "out.txt").write_text(unit.kind)
        return {"kind": unit.kind}

    return runner


def test_local_executor_runs_dependencies_first_and_skips_finished_units(tmp_path):
    units = plan(load_study(write_spec(tmp_path)))
    root = tmp_path / "runs"
    calls = []
    records = run_local(units, root, recording_runner(calls))
    assert len(records) == len(units) == len(calls)
    record = json.loads((root / units[0].id / UNIT_FILE).read_text())
    assert record["summary"] == {"kind": "static"} and record["wall_s"] >= 0
    calls.clear()
    run_local(units, root, recording_runner(calls))
    assert calls == []  # everything was finished


def test_keep_going_skips_dependants_of_a_failed_unit_and_resumes_later(tmp_path):
    units = plan(load_study(write_spec(tmp_path)))
    root = tmp_path / "runs"
    calls = []
    run_local(units, root, recording_runner(calls, fail_on="train__length__seed-0"), keep_going=True)
    failed_train = next(u for u in units if "train__length__seed-0" in u.id)
    dependants = [u for u in units if failed_train.id in u.needs]
    assert finished(root, failed_train) is None
    assert all(finished(root, u) is None for u in dependants)
    assert not any(u.id in calls for u in dependants)
    calls.clear()
    run_local(units, root, recording_runner(calls))
    assert sorted(calls) == sorted([failed_train.id] + [u.id for u in dependants])


def pid_runner(unit, where, deps):
    """Module-level (a spawned child imports it by name): records which process ran the unit."""
    if unit.kind == "eval":
        raise ValueError(f"eval unit {unit.id} fails on purpose")
    return {"pid": os.getpid()}


def test_isolated_units_run_in_child_processes_and_their_errors_reach_the_parent(tmp_path):
    units = plan(load_study(write_spec(tmp_path)))
    root = tmp_path / "runs"
    static = [u for u in units if u.kind == "static"][:2]
    records = run_local(static, root, pid_runner, isolate=True)
    pids = {r["summary"]["pid"] for r in records}
    assert len(pids) == 2 and os.getpid() not in pids  # a fresh process per unit
    assert all(finished(root, u) for u in static)
    evals = [u for u in units if u.kind == "eval" and not u.needs]
    with pytest.raises(ValueError, match="fails on purpose"):
        run_local(evals[:1], root, pid_runner, isolate=True)


def test_waves_respect_needs(tmp_path):
    units = plan(load_study(write_spec(tmp_path)))
    seen = set()
    for wave in waves(units):
        assert all(n in seen for u in wave for n in u.needs)
        seen |= {u.id for u in wave}


def test_ray_executor_matches_local(tmp_path):
    ray = pytest.importorskip("ray")
    from harness.executor import run_ray

    units = plan(load_study(write_spec(tmp_path)))[:6]
    calls = []
    try:
        records = run_ray(units, tmp_path / "runs", recording_runner(calls), num_cpus=1, include_dashboard=False)
    finally:
        ray.shutdown()
    assert sorted(r["id"] for r in records) == sorted(u.id for u in units)
    assert all(finished(tmp_path / "runs", u) for u in units)


def test_an_ablation_of_a_labelled_method_keeps_its_kwargs_and_unknown_parents_are_rejected(tmp_path):
    spec = SPEC.replace("  - {method: random, grid: {seed: [2, 3]}}", "  - {method: coin, grid: {seed: [2]}}")
    labelled = "  - {name: random, label: coin, kwargs: {seed: 1, x: 0}}"
    spec = spec.replace("  - {name: random, kwargs: {seed: 1}}", labelled)
    (point,) = [m for _, m in ablation_methods(load_study(write_spec(tmp_path, spec)))]
    assert (point.name, point.label, dict(point.kwargs)) == ("random", "coin[seed=2]", {"seed": 2, "x": 0})
    with pytest.raises(SpecError, match=r"study.yaml:\d+: ablations\[0\].method 'nope'"):
        load_study(write_spec(tmp_path, spec.replace("{method: coin,", "{method: nope,")))
