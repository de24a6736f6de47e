"""What this machine can do: memory read bandwidth, fp32 matmul rate, and a description for benchmark reports.

Each probe reports wall-clock rates and, with one thread, rates by process CPU time. On a machine shared with
other jobs wall time includes waiting for a core, so the CPU-time rate is the better estimate of what a quiet
machine does; a roofline takes the larger of the two.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def best_rates(work: float, fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best `work / seconds` over `repeats` calls of `fn`, by wall-clock time and by process CPU time."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return work / min(walls), work / max(min(cpus), 1e-9)


def measure_bandwidth(threads: int, megabytes: int = 512, repeats: int = 7) -> dict[str, float | None]:
    """Memory read and copy bandwidth in GB/s with `threads` torch threads (best over `repeats`).

    Reading (a sum over a tensor far larger than the caches) is what a decode step does with the weights; copy
    counts read and write traffic. `read_gb_s_cpu` (one thread only) times by process CPU time.
    """
    import torch

    torch.set_num_threads(threads)
    a = torch.ones(megabytes * 2**20 // 4)
    b = torch.empty_like(a)
    read_wall, read_cpu = best_rates(a.nbytes / 1e9, a.sum, repeats)
    copy_wall, _ = best_rates(2 * a.nbytes / 1e9, lambda: b.copy_(a), repeats)
    return {"read_gb_s": read_wall, "read_gb_s_cpu": read_cpu if threads == 1 else None, "copy_gb_s": copy_wall}


def measure_matmul(threads: int, size: int = 1024, repeats: int = 5) -> dict[str, float | None]:
    """fp32 matmul rate in GFLOP/s of a `size`-square product with `threads` torch threads (best over `repeats`)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    wall, cpu = best_rates(2 * size**3 / 1e9, lambda: torch.mm(a, b), repeats)
    return {"gflop_s": wall, "gflop_s_cpu": cpu if threads == 1 else None}


def machine_info() -> dict[str, Any]:
    """CPU model, core count, library versions and load (a benchmark is only as quiet as its machine)."""
    import torch
    import transformers

    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "loadavg_1m_start": os.getloadavg()[0],
    }
