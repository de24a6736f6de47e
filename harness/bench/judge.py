"""Judge speed: criterion verdicts/s of the shared-prefix judge against the unshared judge and a naive judge.

The naive judge is the one written first: one chat call per criterion through `backend.generate`, a few greedy
tokens, parsed as yes/no. All three grade the same real HealthBench items (conversation, physician ideal
completion, physician rubric) with the same judge prompt. The shared judge grades whole rubrics, which is how it
is used; the two baselines pay the same price for every criterion, so they grade the first few criteria of each
item only. Modes alternate item by item, so load from other processes falls on all of them alike.

Roofline: a forward pass costs about 2 FLOPs per non-embedding parameter per token (the judge runs the output
layer on one position per verdict, and attention is left out), so tokens/s x that / the measured fp32 matmul
FLOP/s is the share of the machine's compute ceiling a mode reaches. `speedup.token_bound_*` is the ratio of
tokens processed per verdict, the speed-up sharing would give if every token cost the same: on HealthBench items
(a prefix of ~650 tokens, ~14 criteria of ~46 suffix tokens each) it is about 6-8x.

Run `harness bench judge [--quick]`; it writes `reports/bench/judge.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from harness.judge import Item, Judge, judge_chat, split_judge_tokens
from harness.store import atomic_write_text
from harness.types import GenerationParams, Rubric

SCHEMA = "bench-judge-v1"
DEFAULT_OUT = Path("reports/bench/judge.json")
QUICK_OUT = Path("reports/bench/judge-quick.json")  # a smoke run must not overwrite the real figures
NAIVE_PARAMS = GenerationParams(max_new_tokens=4, temperature=0.0)
TARGET_SPEEDUP = 10.0
_FIRST_WORD = re.compile(r"[A-Za-z]+")


def parse_yes_no(text: str) -> float | None:
    """1.0 for a reply whose first word is yes, 0.0 for no, None for anything else.

    >>> parse_yes_no(" Yes, it does."), parse_yes_no("no"), parse_yes_no("Maybe")
    (1.0, 0.0, None)
    """
    match = _FIRST_WORD.search(text)
    word = match.group(0).lower() if match else ""
    return {"yes": 1.0, "no": 0.0}.get(word)


class NaiveJudge:
    """One `generate` call per criterion; counts the tokens it makes the model process."""

    def __init__(self, backend: Any, params: GenerationParams = NAIVE_PARAMS) -> None:
        self.backend, self.params = backend, params
        self.tokens = 0

    def verdicts(self, items: Sequence[Item]) -> list[list[float | None]]:
        """A parsed yes/no (or None) per criterion of each item."""
        out = []
        for conversation, response, rubric in items:
            row = []
            for criterion in rubric.criteria:
                chat = judge_chat(conversation, response, criterion.text)
                [reply] = self.backend.generate([chat], self.params)
                # One decode step per generated token plus the one that produced end-of-turn, at most the budget.
                steps = min(self.params.max_new_tokens, _count(self.backend, reply) + 1)
                self.tokens += _count(self.backend, self.backend.render(chat)) + steps - 1
                row.append(parse_yes_no(reply))
            out.append(row)
        return out


def _count(backend: Any, text: str) -> int:
    return len(backend.tokenizer(text, add_special_tokens=False)["input_ids"])


def judge_tokens(backend: Any, item: Item) -> tuple[int, int]:
    """Tokens the shared judge processes for an item (prefix once + suffixes) and the unshared judge (every chat)."""
    conversation, response, rubric = item
    shared, fulls = split_judge_tokens(backend, conversation, response, [c.text for c in rubric.criteria])
    return shared + sum(len(f) - shared for f in fulls), sum(len(f) for f in fulls)


def matmul_flops(rows: int = 1024, inner: int = 576, cols: int = 1536, repeats: int = 20) -> float:
    """Best measured fp32 FLOP/s of a (rows x inner) @ (inner x cols) matmul (SmolLM2-135M's MLP shape)."""
    import torch

    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * rows * inner * cols / best


def model_params(model: Any) -> tuple[int, int]:
    """(all parameters, parameters outside the input embedding) of a transformers model."""
    total = sum(p.numel() for p in model.parameters())
    return total, total - model.get_input_embeddings().weight.numel()


def select_items(n: int, seed: int = 0) -> list[Item]:
    """`n` HealthBench items with a physician ideal completion, sampled reproducibly."""
    from harness.data import load_healthbench

    records = [r for r in load_healthbench() if r.ideal_completion]
    return [(list(r.chat), r.ideal_completion, r.rubric) for r in random.Random(seed).sample(records, n)]


def _timed(fn: Callable[[Any], Any], arg: Any) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(arg)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def _first(item: Item, k: int) -> Item:
    conversation, response, rubric = item
    return conversation, response, Rubric(rubric.criteria[:k], rubric.source, rubric.prompt_id)


def measure(backend: Any, items: Sequence[Item], baseline_criteria: int) -> dict[str, Any]:
    """Time the three judges item by item; return per-mode totals and the verdicts for agreement checks."""
    shared = Judge(backend, mode="shared", progress=False)
    unshared = Judge(backend, mode="unshared", progress=False)
    naive = NaiveJudge(backend)
    graders: dict[str, Callable[[Item], list[float | None]]] = {
        "shared": lambda it: [v.p_yes for v in shared.verdicts([it])[0]],
        "unshared": lambda it: [v.p_yes for v in unshared.verdicts([it])[0]],
        "naive": lambda it: naive.verdicts([it])[0],
    }
    totals = {m: {"verdicts": 0, "wall_s": 0.0, "cpu_s": 0.0, "tokens": 0} for m in graders}
    pairs: dict[str, list[tuple[float | None, float | None]]] = {"unshared": [], "naive": []}
    for item in tqdm(items, desc="bench judge", unit="item"):
        results = {}
        for mode, grade in graders.items():
            graded = item if mode == "shared" else _first(item, baseline_criteria)
            before = naive.tokens
            wall, cpu, results[mode] = _timed(grade, graded)
            shared_tokens, full_tokens = judge_tokens(backend, graded)
            tokens = {"shared": shared_tokens, "unshared": full_tokens, "naive": naive.tokens - before}[mode]
            row = totals[mode]
            row["verdicts"] += len(results[mode])
            row["wall_s"] += wall
            row["cpu_s"] += cpu
            row["tokens"] += tokens
        for mode in pairs:
            pairs[mode] += list(zip(results["shared"][:baseline_criteria], results[mode], strict=True))
    return {"totals": totals, "pairs": pairs}


def _agreement(pairs: dict[str, list[tuple[float | None, float | None]]]) -> dict[str, Any]:
    diffs = [abs(a - b) for a, b in pairs["unshared"] if a is not None and b is not None]
    parsed = [(a, b) for a, b in pairs["naive"] if a is not None and b is not None]
    return {
        "shared_vs_unshared_max_abs_diff": max(diffs) if diffs else None,
        "naive_unparsed": sum(b is None for _, b in pairs["naive"]),
        # How often the naive judge's generated answer equals the shared judge's P(yes) > 0.5 call.
        "naive_vs_shared_agreement": sum((a > 0.5) == (b == 1.0) for a, b in parsed) / len(parsed) if parsed else None,
    }


def machine_info() -> dict[str, Any]:
    """CPU, thread count, library versions and the load average (other processes make timings noisy)."""
    import torch
    import transformers

    cpu = platform.processor()
    if Path("/proc/cpuinfo").is_file():
        names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load_avg_1m": os.getloadavg()[0],
    }


def summarise(raw: dict[str, Any], flops_per_token: float, ceiling: float) -> dict[str, Any]:
    """Per-mode rates, roofline fractions and speed-ups from the measured totals."""
    modes = {}
    for mode, row in raw["totals"].items():
        tokens_per_s = row["tokens"] / row["wall_s"]
        modes[mode] = {
            **row,
            "verdicts_per_s": row["verdicts"] / row["wall_s"],
            "verdicts_per_cpu_s": row["verdicts"] / row["cpu_s"],
            "tokens_per_s": tokens_per_s,
            "roofline_fraction": tokens_per_s * flops_per_token / ceiling,
        }
    speedup = {}
    # CPU seconds are less disturbed by other processes than wall seconds; both are reported.
    for clock, key in (("", "verdicts_per_s"), ("_cpu", "verdicts_per_cpu_s")):
        rate = {m: v[key] for m, v in modes.items()}
        speedup[f"shared_vs_naive{clock}"] = rate["shared"] / rate["naive"]
        speedup[f"shared_vs_unshared{clock}"] = rate["shared"] / rate["unshared"]
        speedup[f"unshared_vs_naive{clock}"] = rate["unshared"] / rate["naive"]
    per_verdict = {m: row["tokens"] / row["verdicts"] for m, row in raw["totals"].items()}
    # Sharing can at best divide the tokens per verdict; the rest of the speed-up is per-token efficiency.
    speedup["token_bound_vs_unshared"] = per_verdict["unshared"] / per_verdict["shared"]
    speedup["token_bound_vs_naive"] = per_verdict["naive"] / per_verdict["shared"]
    return {"modes": modes, "speedup": speedup, "agreement": _agreement(raw["pairs"])}


def run(model: str, n_items: int, baseline_criteria: int, seed: int = 0, threads: int | None = None) -> dict[str, Any]:
    """Load the judge model, measure the ceiling and the three judges, and return the report."""
    from harness.backends import make_backend

    backend = make_backend(model, progress=False, threads=threads)
    items = select_items(n_items, seed)
    info = machine_info()
    total, non_embedding = model_params(backend.model)
    flops_per_token = 2 * non_embedding
    # Warm-up: the first forward passes allocate and pick kernels; keep that out of every mode's time.
    warm = _first(select_items(1, seed + 1)[0], 2)
    Judge(backend, mode="shared", progress=False).verdicts([warm])
    NaiveJudge(backend).verdicts([_first(warm, 1)])
    ceiling = matmul_flops()
    raw = measure(backend, items, baseline_criteria)
    ceiling = max(ceiling, matmul_flops())  # the best of before and after: noise only ever lowers it
    info["load_avg_1m_end"] = os.getloadavg()[0]
    return {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "model": {"spec": model, "model_id": backend.model_id, "params": total, "params_non_embedding": non_embedding},
        "ceiling": {
            "matmul_flops_per_s": ceiling,
            "flops_per_token": flops_per_token,
            "roofline_tokens_per_s": ceiling / flops_per_token,
        },
        "workload": {
            "items": len(items),
            "prompt_ids": [rubric.prompt_id for _, _, rubric in items],
            "criteria_per_item_baselines": baseline_criteria,
            "naive_params": NAIVE_PARAMS.to_dict(),
        },
        **summarise(raw, flops_per_token, ceiling),
        "target_speedup_vs_naive": TARGET_SPEEDUP,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options, shared by `main` and `harness bench judge`."""
    parser.add_argument("--model", default="hf:smollm2-135m", help="judge backend spec (needs model weights)")
    parser.add_argument("--items", type=int, default=6, help="HealthBench items graded by every mode")
    parser.add_argument("--baseline-criteria", type=int, default=4, help="criteria per item for the baselines")
    parser.add_argument("--quick", action="store_true", help="1 item, 2 baseline criteria (a smoke run)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0, help="which HealthBench items are sampled")
    parser.add_argument("--out", type=Path, help=f"JSON report (default {DEFAULT_OUT}; {QUICK_OUT} with --quick)")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark with parsed options, write the JSON report and print a summary."""
    if args.quick:
        args.items, args.baseline_criteria = 1, 2
    args.out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    if args.items < 1 or args.baseline_criteria < 1:
        raise ValueError("--items and --baseline-criteria must be >= 1")
    report = run(args.model, args.items, args.baseline_criteria, args.seed, args.threads)
    report["options"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k in _OPTIONS}
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    for mode, row in report["modes"].items():
        print(
            f"{mode:9s} {row['verdicts_per_s']:8.3f} verdicts/s  {row['tokens_per_s']:7.1f} tok/s  "
            f"{100 * row['roofline_fraction']:5.1f}% of roofline  ({row['verdicts']} verdicts)"
        )
    print(f"speed-up over naive: {report['speedup']['shared_vs_naive']:.1f}x; wrote {args.out}")
    return report


_OPTIONS = ("model", "items", "baseline_criteria", "quick", "threads", "seed", "out")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m harness.bench.judge [--quick] [--items N] [--baseline-criteria K] [--model SPEC] [--out PATH]`."""
    from harness.bench import cli_main

    return cli_main("harness bench judge", __doc__, add_arguments, bench, argv)


if __name__ == "__main__":
    raise SystemExit(main())
