"""Peak memory of one GRPO micro-batch's forward and backward pass, with and without activation checkpointing.

A GRPO step back-propagates its completions `micro_batch` at a time, each row a prompt plus its completion, and
only the completion tokens need logits (TRL's `logits_to_keep`). What the backward pass holds then grows with the
prompt length: the `cpu` runs' transient RSS peaks came on long HealthBench prompts. Each cell runs in a fresh
process, so its peak RSS (`ru_maxrss`) is its own; `backward_extra_gb` is that peak minus the RSS after loading.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from harness.bench.decode import int_list  # light: no torch at import

DEFAULT_OUT = Path("reports/bench/backward.json")


def _rss_gb() -> float:
    """This process's resident set size now, in GB (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e9


def measure_one(model: str, length: int, batch: int, completion: int, checkpointing: bool) -> dict[str, Any]:
    """Load `model`, run one forward+backward of `batch` rows of `length` tokens; memory and time of that pass."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness import catalog

    torch.manual_seed(0)
    net = AutoModelForCausalLM.from_pretrained(catalog.resolve(model), dtype=torch.float32)
    net.train()
    if checkpointing:
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    loaded = _rss_gb()
    ids = torch.randint(0, net.config.vocab_size, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1:, : length // 3] = 0  # left padding on all rows but one: prompts of unequal length, as in a real batch
    start = time.perf_counter()
    logits = net(input_ids=ids, attention_mask=mask, logits_to_keep=completion + 1).logits[:, :-1]
    logps = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, -completion:, None])
    logps.mean().backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports KiB
    return {
        "length": length,
        "activation_checkpointing": checkpointing,
        "rss_after_load_gb": round(loaded, 3),
        "peak_rss_gb": round(peak, 3),
        "backward_extra_gb": round(peak - loaded, 3),
        "seconds": round(seconds, 2),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to `p` (used by `harness bench backward` and by `main`)."""
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--lengths", type=int_list, default=[400, 800, 1200],
                   help="tokens per row, prompt plus completion, comma-separated (default 400,800,1200)")  # fmt: skip
    p.add_argument("--batch", type=int, default=4, help="rows per pass: the preset's micro_batch (default 4)")
    p.add_argument("--completion-tokens", type=int, default=128, help="tokens with logits per row (default 128)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")


def check(args: argparse.Namespace) -> None:
    """Raise ValueError naming the first bad option."""
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.completion_tokens < 1 or args.completion_tokens >= min(args.lengths):
        raise ValueError(f"--completion-tokens must lie in 1..{min(args.lengths) - 1} (shorter than every length)")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every length with and without checkpointing, print a table and write the JSON report."""
    from tqdm.auto import tqdm

    from harness.bench import write_report
    from harness.bench.machine import machine_info

    check(args)
    cells = [(length, ckpt) for length in args.lengths for ckpt in (False, True)]
    results = []
    for length, ckpt in tqdm(cells, desc="backward memory"):
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # a fresh peak per cell
            job = pool.submit(measure_one, args.model, length, args.batch, args.completion_tokens, ckpt)
            results.append(job.result())
    report = {
        "machine": machine_info(),
        "model": args.model,
        "batch": args.batch,
        "completion_tokens": args.completion_tokens,
        "results": results,
    }
    for r in results:
        print(f"length {r['length']:5d}  checkpointing {str(r['activation_checkpointing']):5}  "
              f"+{r['backward_extra_gb']:.2f} GB (peak {r['peak_rss_gb']:.2f})  {r['seconds']:.1f} s")  # fmt: skip
    write_report(args.out, report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (`python -m harness.bench.backward`, same options as `harness bench backward`)."""
    from harness.bench import cli_main

    return cli_main("harness bench backward", __doc__, add_arguments, bench, argv)


if __name__ == "__main__":
    sys.exit(main())
