"""The first-run demo: real HealthBench prompts, three kinds of response, scored by reward methods.

For each prompt the responses are the physician-written ideal, a frontier model's reference completion, and
SmolLM2-135M's own answer (generated here, cached). Every method scores every response; the table shows the
mean score per response source and how often each method ranks the physician's answer above the others.
"""

from __future__ import annotations

from collections import defaultdict

from harness.backends.hf import HFBackend
from harness.cache import CachedBackend, content_key
from harness.catalog import file_sha256, fingerprint
from harness.cli import format_table
from harness.data import healthbench_file, load_healthbench
from harness.methods import create_method
from harness.store import Run, run_pending
from harness.types import GenerationParams

SOURCES = ("physician ideal", "reference model", "smollm2-135m")


def demo_responses(n_items: int, model: str, params: GenerationParams) -> list[dict]:
    """One row per (prompt, response source) for the first `n_items` prompts with ideal and reference answers."""
    records = [r for r in load_healthbench() if r.ideal_completion and r.reference_completions][:n_items]
    backend = CachedBackend(HFBackend(model))
    own = backend.generate([r.chat for r in records], params)
    rows = []
    for record, generated in zip(records, own, strict=True):
        texts = (record.ideal_completion, record.reference_completions[0], generated)
        rows += [
            {"prompt_id": record.prompt_id, "chat": record.chat, "source": s, "response": t}
            for s, t in zip(SOURCES, texts, strict=True)
        ]
    return rows


def summarise(records: list[dict], methods: list[str]) -> list[list[object]]:
    """Mean score per (method, source) and the share of prompts where the ideal answer scores highest."""
    table = []
    for method in methods:
        mine = [r for r in records if r["method"] == method]
        by_source = defaultdict(list)
        by_prompt: dict[str, dict[str, float]] = defaultdict(dict)
        for r in mine:
            by_source[r["source"]].append(r["score"])
            by_prompt[r["prompt_id"]][r["source"]] = r["score"]
        means = [f"{sum(v) / len(v):.3g}" for v in (by_source[s] for s in SOURCES)]
        wins = [s[SOURCES[0]] > max(s[o] for o in SOURCES[1:]) for s in by_prompt.values()]
        table.append([method, *means, f"{sum(wins)}/{len(wins)}"])
    return table


def run_demo(
    n_items: int = 6, methods: list[str] | None = None, runs_root: str = "runs", model: str = "smollm2-135m"
) -> list[list[object]]:
    """Run the demo, store per-item scores in the run store, print the summary table and return its rows."""
    methods = methods or ["length", "random"]
    params = GenerationParams(max_new_tokens=96)
    config = {"n_items": n_items, "methods": methods, "model": model, "generation": params.to_dict()}
    run = Run(runs_root, f"demo-{content_key('demo', **config)[:10]}", config)
    run.note(models={model: fingerprint(model)}, data={"healthbench": file_sha256(healthbench_file())})
    rows = demo_responses(n_items, model, params)
    for name in methods:
        method = create_method(name)

        def compute(batch: list[dict], method=method) -> list[dict]:
            scores = method.score([r["chat"] for r in batch], [r["response"] for r in batch])
            return [
                {"method": method.name, "prompt_id": r["prompt_id"], "source": r["source"], "score": s}
                for r, s in zip(batch, scores, strict=True)
            ]

        run_pending(
            run.results,
            rows,
            key=lambda r, n=name: f"{n}/{r['prompt_id']}/{r['source']}",
            compute=compute,
            desc=f"scoring with {name}",
        )
    headers = ["method", *(f"mean: {s}" for s in SOURCES), "ideal ranked first"]
    table = summarise(run.results.records(), methods)
    print(format_table(headers, table))
    print(f"\nper-item scores: {run.results.path}")
    return table
