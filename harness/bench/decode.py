"""`harness bench decode`: decode tokens/s of the embedded model against the memory-bandwidth roofline.

Every decode step reads all weights once, so a step cannot take less than weight bytes / memory bandwidth (the
roofline); at batch B that caps throughput at B tokens per such step. At batch 16 the matmuls' FLOPs over the
machine's peak matmul rate are a second floor, reported next to it (`floors`). The benchmark times the decode
steps of `HFBackend.generate` (prefill excluded; EOS disabled so every run makes exactly `--new-tokens` tokens)
for the stock path, each optimisation alone and all of them, at each batch size and thread count. Variants take
turns within each repeat, so load from other processes hits them alike; the median over repeats is reported,
by wall clock and by process CPU time (with one thread, the latter is what a quiet machine would show).

    harness bench decode                 # full table (~20 min on a quiet 2-core machine)
    harness bench decode --quick         # stock vs all, batches 1 and 16, short runs (~2 minutes)
    harness bench decode --threads 1 --batches 16 --variants stock,onednn-linear,all
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROMPTS = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator keeps food cold, step by step.",
    "Describe a busy market in a small coastal town in the morning.",
    "Write a letter to a friend about learning to play the piano.",
    "Explain why the sky is blue to a ten-year-old.",
    "Write a poem about autumn leaves falling in a city park.",
    "Describe the life cycle of a butterfly in detail.",
    "Tell a story about a robot that learns to paint.",
    "Explain the rules of chess to someone who has never played.",
    "Write a travel diary entry about a train journey through the mountains.",
    "Describe how bread is made, from flour to loaf.",
    "Write a story about two friends building a treehouse.",
    "Explain how the water cycle works.",
    "Describe a thunderstorm from the point of view of a cat.",
    "Write a short biography of an imaginary inventor.",
    "Explain what a computer does when you press a key.",
)

DEFAULT_OUT = Path("reports/bench/decode.json")
SCHEMA_VERSION = 1
VARIANT_NAMES = ("stock", "gqa-attn", "prealloc-cache", "onednn-linear", "skinny-linear", "all-model-step", "all")


def variants() -> dict[str, Any]:
    """Decode options per variant: the stock path, each optimisation alone, and the CPU default (all of them)."""
    from harness.backends.decode_kernels import CPU_DEFAULTS, DecodeOptions

    return {  # keys: VARIANT_NAMES (kept apart so the CLI can list them without importing torch)
        "stock": DecodeOptions(),
        "gqa-attn": DecodeOptions(attn="gqa"),
        "prealloc-cache": DecodeOptions(cache="prealloc"),
        "onednn-linear": DecodeOptions(linear="onednn"),
        "skinny-linear": DecodeOptions(linear="skinny"),
        "all-model-step": DecodeOptions(attn="gqa", cache="prealloc", linear="onednn"),  # all but the fused step
        "all": CPU_DEFAULTS,
    }


def int_list(text: str) -> list[int]:
    """Parse `1,8,16`."""
    return [int(x) for x in text.split(",")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to `p` (used by `harness bench decode` and by `main`)."""
    ints = int_list
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batches", type=ints, help="batch sizes, comma-separated (default 1,8,16)")
    p.add_argument("--new-tokens", type=int, help="tokens generated per run (default 64)")
    p.add_argument("--repeats", type=int, help="timed runs per variant and batch (default 3)")
    p.add_argument("--threads", type=ints, help=f"torch thread counts to try (default 1..{os.cpu_count()})")
    p.add_argument("--variants", type=lambda t: t.split(","), help="subset of: " + ", ".join(VARIANT_NAMES))
    p.add_argument("--quick", action="store_true", help="stock and all, batches 1 and 16, 16 tokens, 2 repeats")
    p.add_argument("--bandwidth-mb", type=int, default=512, help="buffer for the bandwidth test (>> caches)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options left unset (`--quick` picks smaller ones) and check them; raises ValueError on bad ones."""
    quick = args.quick
    args.batches = args.batches or ([1, 16] if quick else [1, 8, 16])
    args.new_tokens = args.new_tokens or (16 if quick else 64)
    args.repeats = args.repeats or (2 if quick else 3)
    args.threads = args.threads or list(range(1, (os.cpu_count() or 1) + 1))
    args.variants = args.variants or (["stock", "all"] if quick else list(VARIANT_NAMES))
    unknown = sorted(set(args.variants) - set(VARIANT_NAMES))
    if unknown:
        raise ValueError(f"--variants: unknown {', '.join(unknown)}; expected some of {', '.join(VARIANT_NAMES)}")
    if args.new_tokens < 3 or args.repeats < 1 or min(args.threads) < 1:
        raise ValueError("--new-tokens must be >= 3, --repeats and --threads >= 1")
    if min(args.batches) < 1 or max(args.batches) > len(PROMPTS):
        raise ValueError(f"--batches must lie in 1..{len(PROMPTS)} (the fixed prompt set)")
    return args


def weight_stats(model: Any) -> dict[str, int]:
    """Bytes of all (unique) parameters, and the multiply-adds per token of the matmuls a decode step runs."""
    from torch import nn

    params = {id(p): p for p in model.parameters()}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return {
        "weight_bytes": sum(p.nbytes for p in params.values()),
        "params": sum(p.numel() for p in params.values()),
        "matmul_macs_per_token": sum(m.weight.numel() for m in linears),
    }


class StepClock:
    """Times a backend's decode steps from the starts of consecutive steps (a hook on the input embedding).

    Every step, the model's forward or the fused one, starts by embedding its tokens, so the time between two
    starts is one whole step, sampling included. The first start is the prefill's and is left out. Records wall
    time and this process's CPU time: on a shared machine wall time includes waiting for a core, while CPU time
    with one thread is close to what a quiet machine's wall time would be.
    """

    def __init__(self, model: Any) -> None:
        self.starts: list[tuple[float, float]] = []
        model.get_input_embeddings().register_forward_pre_hook(lambda *_: self.starts.append(self.now()))

    @staticmethod
    def now() -> tuple[float, float]:
        """(wall, process CPU) seconds."""
        return time.perf_counter(), time.process_time()

    def step_seconds(self, run: Any) -> tuple[float, float]:
        """Run `run()` (at least 3 forwards) and return its mean (wall, CPU) seconds per decode step."""
        self.starts.clear()
        run()
        (wall0, cpu0), (wall1, cpu1) = self.starts[1], self.starts[-1]
        steps = len(self.starts) - 2
        return (wall1 - wall0) / steps, (cpu1 - cpu0) / steps


def time_variants(backend: Any, clock: StepClock, args: argparse.Namespace, threads: int) -> list[dict[str, Any]]:
    """Seconds per decode step for each variant and batch at `threads` threads (median of `args.repeats`)."""
    import torch
    from tqdm.auto import tqdm

    from harness.types import GenerationParams, user_chat

    torch.set_num_threads(threads)
    options = variants()
    params = GenerationParams(max_new_tokens=args.new_tokens)
    rows = []
    for batch in args.batches:
        chats = [user_chat(p) for p in PROMPTS[:batch]]
        backend.batch_size = batch
        times: dict[str, list[tuple[float, float]]] = {v: [] for v in args.variants}
        # Round 0 warms up (and packs the weights for onednn) with a short run and is not kept.
        for round_ in tqdm(range(args.repeats + 1), desc=f"threads={threads} batch={batch}", leave=False):
            for name in args.variants:
                backend.decode_options = options[name]
                warm = GenerationParams(max_new_tokens=3) if round_ == 0 else params
                seconds = clock.step_seconds(lambda: backend.generate(chats, warm))  # noqa: B023
                if round_ > 0:
                    times[name].append(seconds)
        for name in args.variants:
            rows.append(
                {
                    "variant": name,
                    "options": options[name].__dict__,
                    "threads": threads,
                    "batch": batch,
                    "ms_per_step": 1000 * statistics.median(wall for wall, _ in times[name]),
                    "cpu_ms_per_step": 1000 * statistics.median(cpu for _, cpu in times[name]),
                    "ms_per_step_runs": [round(1000 * wall, 2) for wall, _ in times[name]],
                }
            )
    return rows


def roofline(machine: dict[str, Any], weights: dict[str, int]) -> dict[str, Any]:
    """The step-time floors: weight bytes over the best read bandwidth, and matmul FLOPs over peak rate.

    Bandwidth is the best measured (any thread count; one thread also by CPU time). The compute peak of t threads
    is t times the best one-thread rate, or the measured t-thread rate if higher (the ideal, linear scaling).
    """
    bw = machine["bandwidth_gb_s"]
    best_bw = max(v for b in bw.values() for v in (b["read_gb_s"], b["read_gb_s_cpu"]) if v)
    mm = machine["matmul_gflop_s"]
    one = max(v for v in (mm["threads=1"]["gflop_s"], mm["threads=1"]["gflop_s_cpu"]) if v) if "threads=1" in mm else 0
    peaks = {int(k.split("=")[1]): max(m["gflop_s"], int(k.split("=")[1]) * one) for k, m in mm.items()}
    return {
        "bandwidth_gb_s": best_bw,
        "bandwidth_ms_per_step": 1000 * weights["weight_bytes"] / (best_bw * 1e9),
        "peak_gflop_s": peaks,
        "basis": "every step reads every weight once (KV-cache reads not counted); compute: 2 FLOPs per MAC",
    }


def add_roofline(rows: list[dict[str, Any]], weights: dict[str, int], roof: dict[str, Any]) -> None:
    """Add tok/s, roofline tok/s and fractions (bandwidth floor; max of both floors), GFLOP/s and speed-up."""
    bw_ms = roof["bandwidth_ms_per_step"]
    stock = {(r["threads"], r["batch"]): r["ms_per_step"] for r in rows if r["variant"] == "stock"}
    for r in rows:
        ms, batch, flops = r["ms_per_step"], r["batch"], 2 * weights["matmul_macs_per_token"] * r["batch"]
        compute_ms = flops / roof["peak_gflop_s"][r["threads"]] / 1e6
        r["tok_s"] = 1000 * batch / ms
        r["roofline_tok_s"] = 1000 * batch / bw_ms
        r["roofline_fraction"] = bw_ms / ms
        r["compute_floor_ms"] = compute_ms
        r["floors_fraction"] = max(bw_ms, compute_ms) / ms
        # With one thread, CPU time is what the step would take on a quiet machine.
        cpu_ms = r["cpu_ms_per_step"] if r["threads"] == 1 else None
        r["roofline_fraction_cpu"] = bw_ms / cpu_ms if cpu_ms else None
        r["floors_fraction_cpu"] = max(bw_ms, compute_ms) / cpu_ms if cpu_ms else None
        r["matmul_gflop_s"] = flops / ms / 1e6
        base = stock.get((r["threads"], batch))
        r["speedup_vs_stock"] = base / ms if base else None


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the results (`cpu` columns: by CPU time, one-thread rows only)."""
    names = ("threads", "batch", "variant", "ms/step", "cpu ms", "tok/s", "roof", "roof cpu", "floors", "floors cpu")
    lines = ["{:>7} {:>5} {:<15} {:>8} {:>7} {:>7} {:>6} {:>8} {:>6} {:>10} x stock".format(*names)]
    percent = lambda x: f"{x:.0%}" if x else "-"  # noqa: E731
    for r in rows:
        speedup = f"{r['speedup_vs_stock']:.2f}" if r["speedup_vs_stock"] else "-"
        lines.append(
            f"{r['threads']:>7} {r['batch']:>5} {r['variant']:<15} {r['ms_per_step']:>8.1f} "
            f"{r['cpu_ms_per_step']:>7.1f} {r['tok_s']:>7.1f} {percent(r['roofline_fraction']):>6} "
            f"{percent(r['roofline_fraction_cpu']):>8} {percent(r['floors_fraction']):>6} "
            f"{percent(r['floors_fraction_cpu']):>10} {speedup:>7}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Probe the machine and time every (threads, batch, variant) cell; return the report as a dict."""
    import torch

    from harness.backends.hf import HFBackend
    from harness.bench.machine import machine_info, measure_bandwidth, measure_matmul

    machine = machine_info()
    backend = HFBackend(args.model, device="cpu", progress=False)
    # No EOS: every run makes exactly --new-tokens steps, whatever the model writes.
    backend.eos_ids = torch.tensor([], dtype=torch.long)
    clock = StepClock(backend.model)
    weights = weight_stats(backend.model)
    machine["bandwidth_gb_s"], machine["matmul_gflop_s"], rows = {}, {}, []
    for threads in args.threads:
        machine["bandwidth_gb_s"][f"threads={threads}"] = measure_bandwidth(threads, args.bandwidth_mb)
        machine["matmul_gflop_s"][f"threads={threads}"] = measure_matmul(threads)
        rows += time_variants(backend, clock, args, threads)
    roof = roofline(machine, weights)
    add_roofline(rows, weights, roof)
    machine["loadavg_1m_end"] = os.getloadavg()[0]
    settings = {
        k: getattr(args, k) for k in ("batches", "threads", "variants", "new_tokens", "repeats", "bandwidth_mb")
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "argv": sys.argv,
        "machine": machine,
        "model": {"name": args.model, "dtype": str(backend.model.dtype), **weights},
        "settings": settings | {"prompts": list(PROMPTS)},
        "roofline": roof,
        "results": rows,
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark for parsed options, print a table and write the JSON report; returns the report."""
    from harness.bench import write_report

    report = run(resolve_defaults(args))
    print(format_rows(report["results"]))
    roof = report["roofline"]
    print(f"bandwidth floor: {roof['bandwidth_ms_per_step']:.1f} ms/step at {roof['bandwidth_gb_s']:.1f} GB/s (read)")
    write_report(args.out, report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (`python -m harness.bench.decode`, same options as `harness bench decode`)."""
    from harness.bench import cli_main

    return cli_main("harness bench decode", __doc__, add_arguments, bench, argv)


if __name__ == "__main__":
    sys.exit(main())
