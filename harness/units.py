"""What each kind of study unit does: score a static benchmark, train a policy, or evaluate a trained policy.

`run_study_unit` is the runner the executors call. Every unit works inside its own directory through the run store,
so a unit killed half-way resumes where it stopped; methods are fitted once per study under `<root>/_fit`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.methods import FitContext, RewardMethod, create_method
from harness.store import Run, run_pending
from harness.study import MethodSpec, Unit

FIT_DIR = "_fit"
SCORES_RUN = "scores"


def fitted(spec: MethodSpec, root: Path, seed: int = 0) -> RewardMethod:
    """Create the method with its study kwargs and fit it (methods cache their own training under `root/_fit`)."""
    method = create_method(spec.name, **dict(spec.kwargs))
    method.fit(FitContext(workdir=Path(root) / FIT_DIR, seed=seed))
    return method


def _mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def run_static(unit: Unit, where: Path, deps: dict[str, Path]) -> dict[str, Any]:
    """Score every response of the benchmark with the unit's method; one stored record per item."""
    from harness.bench.metrics import item_results, responses_in_order
    from harness.bench.static import build_benchmark
    from harness.bench.static_run import select_split

    config = dict(unit.config)
    split, limit = config.get("split", "all"), config.get("limit")
    # With a split, the limit counts items of that fold (building all of a benchmark first; cheap for fixed sets).
    items = select_split(build_benchmark(config["benchmark"], limit if split == "all" else None).items, split)
    items = items[:limit] if limit else items
    if not items:
        raise ValueError(f"unit {unit.id}: benchmark {config['benchmark']!r} has no items in split {config['split']!r}")
    run = Run(where, SCORES_RUN, {"unit": unit.id, "items": [it.id for it in items]})
    loaded: list[RewardMethod] = []

    def compute(batch: list[Any]) -> list[dict[str, Any]]:
        if not loaded:  # a finished unit loads no model
            loaded.append(fitted(unit.method, where.parent))
        prompts, responses = responses_in_order(batch)
        scores = [float(s) for s in loaded[0].score(prompts, responses)]
        return [{"method": unit.method.label, **r.to_dict()} for r in item_results(batch, scores)]

    records = run_pending(run.results, items, key=lambda it: it.id, compute=compute, desc=f"{unit.method.label}")
    summary = {
        "items": len(records),
        "best_of_n": _mean([r["credit"] for r in records]),
        "pairwise": _mean([r["pair_credit"] for r in records]),
        "unscored": sum(math.isnan(r["credit"]) for r in records),
    }
    fit_dir = getattr(loaded[0], "run_dir", None) if loaded else None
    if fit_dir is not None:  # a method that trains with telemetry (co-evolution): the report draws its curves
        summary["fit_dir"] = str(fit_dir)
    return summary


def run_train(unit: Unit, where: Path, deps: dict[str, Path]) -> dict[str, Any]:
    """Fit the method and train a policy with it (GRPO, or the method's own co-evolution)."""
    from harness.rl import TrainRequest, train_run

    config = dict(unit.config)
    request = TrainRequest(
        method=unit.method.name,
        preset=config["preset"],
        seed=config["seed"],
        method_kwargs=tuple(sorted(unit.method.kwargs.items())),
        base_model=config.get("base_model"),
        steps=config.get("steps"),
    )
    run = train_run(request, runs_root=where)
    return {"policy": run.manifest["policy"], "run_dir": str(run.dir), "train_wall_s": run.manifest.get("wall_s")}


def run_eval(unit: Unit, where: Path, deps: dict[str, Path]) -> dict[str, Any]:
    """Evaluate the policy of the unit's training unit (or the base model) on one lm-eval task, per item."""
    import json

    from harness.downstream import EvalSettings, evaluate, open_eval_run

    config = dict(unit.config)
    if deps:  # a trained policy: the one its training unit wrote
        (train_dir,) = deps.values()
        policy = json.loads((train_dir / "unit.json").read_text())["summary"]["policy"]
    else:  # the untrained base model
        policy = config["policy"]
    settings = EvalSettings(batch_size=16, max_gen_toks=config.get("max_gen_toks"))  # 16: measured fastest on CPU
    run, policy_dir = open_eval_run(policy, where, settings)
    scores = evaluate(policy_dir, [config["task"]], config.get("limit"), run, settings)
    return {"run_dir": str(run.dir), "scores": scores[config["task"]]}


RUNNERS = {"static": run_static, "train": run_train, "eval": run_eval}


def run_study_unit(unit: Unit, where: Path, deps: dict[str, Path]) -> dict[str, Any]:
    """The executors' runner: dispatch on the unit's kind."""
    return RUNNERS[unit.kind](unit, where, deps)
