"""`harness bench static`: score every response of a benchmark with reward methods, store, and summarise.

One run directory per (benchmark, limit, item set); each method's per-item scores are appended to its result log
under the key `method/item-id`, so a killed run resumes where it stopped and adding a method reuses the run.
Metrics per method: best-of-N accuracy (RewardBench 2 tie credit) and pairwise accuracy per subset and their
macro mean, each with a seeded 95% percentile bootstrap CI (subsets resampled independently for the macro
mean); chance levels for reference; and, when `expert_rubrics` scores exist, each method's agreement with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from harness.bench.metrics import item_results, per_subset, responses_in_order, rubric_agreement, summarize
from harness.bench.static import build_benchmark
from harness.catalog import cache_dir
from harness.data import item_to_record
from harness.methods import FitContext, RewardMethod, create_method
from harness.splits import EVAL, TRAIN, fold
from harness.store import Run, atomic_write_text, run_pending
from harness.study import MethodSpec
from harness.types import PreferenceItem

EXPERT_METHOD = "expert_rubrics"
MACRO = "macro"


def items_digest(items: Sequence[PreferenceItem]) -> str:
    """SHA-256 of the items' JSONL records: a run is tied to the exact item set it scored."""
    blob = "\n".join(json.dumps(item_to_record(it), sort_keys=True, ensure_ascii=False) for it in items)
    return hashlib.sha256(blob.encode()).hexdigest()


def fitted_method(spec: MethodSpec, seed: int = 0) -> RewardMethod:
    """Create a method with its kwargs and fit it with its default training data (trained models are cached)."""
    method = create_method(spec.name, **dict(spec.kwargs))
    method.fit(FitContext(workdir=cache_dir() / "fit", seed=seed))
    return method


def select_split(items: Sequence[PreferenceItem], split: str) -> list[PreferenceItem]:
    """All items, or only those whose id falls in the `train` or `eval` fold (`harness.splits.fold`)."""
    if split not in ("all", TRAIN, EVAL):
        raise ValueError(f"split must be 'all', '{TRAIN}' or '{EVAL}', got {split!r}")
    return list(items) if split == "all" else [it for it in items if fold(it.id) == split]


def score_items(
    run: Run, spec: MethodSpec, items: Sequence[PreferenceItem], seed: int = 0, batch_size: int = 16
) -> list[dict]:
    """Score (or resume scoring) every response of every item with one method; one record per item."""
    loaded: list[RewardMethod] = []

    def compute(batch: list[PreferenceItem]) -> list[dict[str, Any]]:
        if not loaded:  # created and fitted only if something is left to score, so a finished run loads nothing
            loaded.append(fitted_method(spec, seed))
        prompts, responses = responses_in_order(batch)
        results = item_results(batch, [float(s) for s in loaded[0].score(prompts, responses)])
        return [{"method": spec.label, **r.to_dict()} for r in results]

    return run_pending(
        run.results,
        list(items),
        key=lambda it: f"{spec.label}/{it.id}",
        compute=compute,
        batch_size=batch_size,
        desc=f"scoring with {spec.label}",
    )


def bootstrap_ci(groups: Sequence[np.ndarray], rng: np.random.Generator, n_resamples: int = 2000) -> list[float]:
    """95% percentile bootstrap CI of the mean of group means, groups resampled independently.

    One group gives the CI of its mean. NaN bounds when a group has fewer than two values (nothing to resample).
    """
    groups = [np.asarray(g, dtype=float) for g in groups]
    if not groups or any(g.size < 2 for g in groups):
        return [float("nan"), float("nan")]
    if all(np.ptp(g) == 0 for g in groups):  # every resample gives the same value; scipy would warn
        point = float(np.mean([g.mean() for g in groups]))
        return [point, point]

    def mean_of_means(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean([s.mean(axis=axis) for s in samples], axis=0)

    res = sps.bootstrap(
        tuple(groups), mean_of_means, n_resamples=n_resamples, method="percentile", rng=rng, vectorized=True
    )
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def _metric(records: Sequence[dict], field: str, rng: np.random.Generator) -> dict[str, Any]:
    """Per-subset and macro accuracy of one credit field, with CIs."""
    credits = np.array([r[field] for r in records], dtype=float)
    subsets = [r["subset"] for r in records]
    out: dict[str, Any] = {}
    groups = []
    for name, acc in per_subset(credits, subsets).items():
        values = credits[(np.asarray(subsets) == name) & ~np.isnan(credits)]
        groups.append(values)
        out[name] = {
            "value": acc.value,
            "ci": bootstrap_ci([values], rng),
            "n": acc.n_scored,
            "unscored": acc.n_unscored,
        }
    macro = float(np.mean([g.mean() for g in groups])) if groups and all(g.size for g in groups) else float("nan")
    n_unscored = summarize(credits).n_unscored
    out[MACRO] = {
        "value": macro,
        "ci": bootstrap_ci(groups, rng),
        "n": int(sum(g.size for g in groups)),
        "unscored": n_unscored,
    }
    return out


def chance_levels(items: Sequence[PreferenceItem]) -> dict[str, dict[str, float]]:
    """Expected accuracy of a random scorer per subset: best-of-N 1/(1 + n_rejected) per chosen, pairwise 0.5."""
    by: dict[str, list[float]] = {}
    for it in items:
        by.setdefault(it.subset, []).append(1.0 / (1 + len(it.rejected)))
    levels = {s: {"best_of_n": float(np.mean(v)), "pairwise": 0.5} for s, v in sorted(by.items())}
    levels[MACRO] = {"best_of_n": float(np.mean([v["best_of_n"] for v in levels.values()])), "pairwise": 0.5}
    return levels


def expert_agreement(records: Sequence[dict], method: str) -> dict[str, Any] | None:
    """Agreement of `method` with the expert-rubric judge on the same responses, if both scored them."""
    expert = {r["id"]: r for r in records if r["method"] == EXPERT_METHOD}
    mine = [r for r in records if r["method"] == method and r["id"] in expert]
    if method == EXPERT_METHOD or not mine:
        return None
    ours, theirs, groups = [], [], []
    for r in mine:
        scores = list(r["chosen_scores"]) + list(r["rejected_scores"])
        ref = list(expert[r["id"]]["chosen_scores"]) + list(expert[r["id"]]["rejected_scores"])
        ours += scores
        theirs += ref
        groups += [r["id"]] * len(scores)
    agreement = rubric_agreement(ours, theirs, groups)
    return {
        "value": agreement.value,
        "pairs": agreement.n_pairs,
        "expert_ties": agreement.n_reference_ties,
        "unscored": agreement.n_unscored,
    }


def summarise_run(records: Sequence[dict], methods: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """Metrics per method from stored per-item records (no model is run here)."""
    out: dict[str, Any] = {}
    for method in methods:
        mine = [r for r in records if r["method"] == method]
        # Seeded by method name, so a method's CI does not depend on which other methods share the run.
        rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(method.encode()).digest()[:8], "big")])
        out[method] = {
            "best_of_n": _metric(mine, "credit", rng),
            "pairwise": _metric(mine, "pair_credit", rng),
            "expert_agreement": expert_agreement(records, method),
        }
    return out


def _run_id(benchmark: str, digest: str) -> str:
    name = Path(benchmark).stem if benchmark.endswith(".jsonl") else benchmark
    return f"static-{name}-{digest[:10]}"


def run_static(
    methods: Sequence[str | MethodSpec],
    benchmark: str,
    limit: int | None = None,
    runs_root: str | Path = "runs",
    seed: int = 0,
    split: str = "all",
    **options: Any,
) -> tuple[Path, dict[str, Any]]:
    """Score `benchmark` with each method, store per-item scores, write `metrics.json`; returns (run dir, metrics).

    A method is a registry name or a `MethodSpec` (kwargs, and the label its scores and metrics are stored under).

    `split="eval"` keeps the items in the eval fold: use it for methods trained on the train fold of the same
    data (bt_rm trains on HealthBench's train fold by default), so that no method is scored on what it saw.
    """
    if not methods:
        raise ValueError("give at least one --method")
    specs = [MethodSpec(m) if isinstance(m, str) else m for m in methods]
    built = build_benchmark(benchmark, limit, **options)
    items = select_split(built.items, split)
    if not items:
        raise ValueError(f"benchmark {benchmark!r} has no items (split {split!r})")
    digest = items_digest(items)
    config = {
        "kind": "static",
        "benchmark": benchmark,
        "limit": limit,
        "split": split,
        "options": options,
        "items_sha256": digest,
    }
    run = Run(runs_root, _run_id(benchmark, digest), config)
    run.note(benchmark_build={"stats": built.stats, "seconds": built.seconds, "cached": built.from_cache})
    for spec in specs:
        score_items(run, spec, items, seed)
    records = run.results.records()
    metrics = {
        "benchmark": benchmark,
        "split": split,
        "n_items": len(items),
        "bootstrap": {"confidence": 0.95, "method": "percentile", "n_resamples": 2000, "seed": seed},
        "chance": chance_levels(items),
        "methods": summarise_run(records, [spec.label for spec in specs], seed),
    }
    atomic_write_text(run.dir / "metrics.json", json.dumps(metrics, indent=1, allow_nan=True))
    return run.dir, metrics


def _fmt(entry: dict[str, Any]) -> str:
    low, high = entry["ci"]
    ci = "" if np.isnan(low) else f" [{low:.3f}, {high:.3f}]"
    return f"{entry['value']:.3f}{ci}"


def metrics_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the summary table: one row per method and subset, macro mean last."""
    headers = ["method", "subset", "n", "best-of-N [95% CI]", "chance", "pairwise [95% CI]", "expert agreement"]
    rows = []
    for method, m in metrics["methods"].items():
        for subset, bon in m["best_of_n"].items():
            agree = m["expert_agreement"] if subset == MACRO else None
            rows.append(
                [
                    method,
                    subset,
                    str(bon["n"]) + (f" (+{bon['unscored']} unscored)" if bon["unscored"] else ""),
                    _fmt(bon),
                    f"{metrics['chance'][subset]['best_of_n']:.3f}",
                    _fmt(m["pairwise"][subset]),
                    f"{agree['value']:.3f} ({agree['pairs']} pairs)" if agree else "",
                ]
            )
    return headers, rows
