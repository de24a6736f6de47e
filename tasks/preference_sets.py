"""Benchmarks with human labels that need no model to build: HealthBench ideal completions and the public sets.

The public sets (`llmbar`, `pandalm`, `hh-rlhf-harmless`, `evalbiasbench`, `hhh-alignment`) are converted from a
local copy of their source files: pass `root=` (the folder that holds `<name>/`) or set `HARNESS_DATA_ROOT`.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.bench.static import benchmark
from harness.data import healthbench_ideal_items, load_shared_set
from harness.types import PreferenceItem

DATA_ROOT_ENV = "HARNESS_DATA_ROOT"


@benchmark("healthbench-ideal", "HealthBench: physician-written ideal beats the model references it was shown")
def healthbench_ideal(limit: int | None = None) -> list[PreferenceItem]:
    """HealthBench prompts with an ideal completion: ideal = chosen, reference completions = rejected."""
    return healthbench_ideal_items()[:limit]


def _shared(name: str, limit: int | None, root: str | Path | None) -> list[PreferenceItem]:
    root = root or os.environ.get(DATA_ROOT_ENV)
    if not root:
        raise ValueError(f"{name} is read from a local copy: pass root=DIR (CLI --data-root) or set {DATA_ROOT_ENV}")
    return load_shared_set(name, root)[:limit]


@benchmark("llmbar", "LLMBar: instruction-following pairs with adversarial distractors (needs --data-root)")
def llmbar(limit: int | None = None, root: str | Path | None = None) -> list[PreferenceItem]:
    """LLMBar natural and adversarial pairs."""
    return _shared("llmbar", limit, root)


@benchmark("pandalm", "PandaLM test set: majority of three annotators (needs --data-root)")
def pandalm(limit: int | None = None, root: str | Path | None = None) -> list[PreferenceItem]:
    """PandaLM human-annotated pairs, ties dropped."""
    return _shared("pandalm", limit, root)


@benchmark("hh-rlhf-harmless", "Anthropic HH-RLHF harmless-base test pairs (needs --data-root)")
def hh_rlhf_harmless(limit: int | None = None, root: str | Path | None = None) -> list[PreferenceItem]:
    """HH-RLHF harmless-base test split."""
    return _shared("hh-rlhf-harmless", limit, root)


@benchmark("evalbiasbench", "EvalBiasBench: pairs that probe judge biases (needs --data-root)")
def evalbiasbench(limit: int | None = None, root: str | Path | None = None) -> list[PreferenceItem]:
    """EvalBiasBench pairs by bias type."""
    return _shared("evalbiasbench", limit, root)


@benchmark("hhh-alignment", "BIG-bench HHH alignment pairs (needs --data-root)")
def hhh_alignment(limit: int | None = None, root: str | Path | None = None) -> list[PreferenceItem]:
    """HHH alignment pairs (honest, helpful, harmless, other)."""
    return _shared("hhh-alignment", limit, root)
