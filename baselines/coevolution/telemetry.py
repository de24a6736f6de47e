"""Per-step telemetry of a co-evolution run, written to the run store as it happens.

`runs/<run_id>/items.jsonl` gets one record per GRPO step (`kind: "step"`) and one per held-out evaluation
(`kind: "eval"`); the manifest gets the final summary. `telemetry.jsonl` next to it holds the same steps flattened
to numbers (`rubrics.criteria_mean`, `pool.criteria`, ...), keyed by global step: the curves `harness report`
draws. A finished run is reused; an unfinished one resumes after its last phase checkpoint
(`baselines.coevolution.checkpoint`), its logs cut back to that point; one without a checkpoint is moved aside and
started again, so nothing finished is lost and no stale record is mixed into the new one.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from baselines.coevolution import checkpoint
from harness.rubric import ParseTally
from harness.rubric_stats import rubric_stats
from harness.store import ResultLog, Run
from harness.types import Rubric

CURVES_LOG = "telemetry.jsonl"  # the name harness.results collects rubric telemetry curves from
# Step counters and cumulative judge counts stay in items.jsonl; the curves hold what changes with training.
NOT_CURVES = {"judge", "phase", "cycle", "global_step", "policy_step", "phase_step"}


def open_run(root: Path, run_id: str, config: dict[str, Any]) -> Run:
    """Open the run `root/run_id`, finished or resumable (see the module docstring).

    An unfinished earlier attempt that cannot resume is renamed `<run_id>.aborted-<time>`.
    """
    config = json.loads(json.dumps(config))  # tuples become lists, as in the stored manifest they are compared to
    target = Path(root) / run_id
    manifest = target / "manifest.json"
    if target.exists() and manifest.exists():
        stored = json.loads(manifest.read_text())
        if stored.get("status") == "done" or stored.get("config") != config:
            return Run(root, run_id, config)  # the finished run, or the error naming the changed config fields
        if (last := checkpoint.latest(target)) is not None:
            checkpoint.rewind_logs(target, last)
            return Run(root, run_id, config)
        target.rename(target.with_name(f"{run_id}.aborted-{int(time.time())}"))
    return Run(root, run_id, config)


def rubric_summary(rubrics: Sequence[Rubric | None], tally: ParseTally | None = None) -> dict[str, Any]:
    """`rubric_stats` of the parsed rubrics plus parse-failure counts (failures are not rubrics)."""
    parsed = [r for r in rubrics if r is not None and r.criteria]
    summary: dict[str, Any] = {k: _clean(v) for k, v in rubric_stats(parsed).items()}
    if tally is not None:
        summary["parse"] = tally.as_dict()
    return summary


def mean(values: Sequence[float]) -> float:
    """Mean of the finite values; NaN when there are none."""
    finite = [v for v in values if not math.isnan(v)]
    return statistics.fmean(finite) if finite else math.nan


def _clean(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def flatten_numbers(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested record, under dotted keys (booleans and strings are left out).

    >>> flatten_numbers({"reward_mean": 0.5, "role": "policy", "pool": {"criteria": 6, "x": float("nan")}})
    {'reward_mean': 0.5, 'pool.criteria': 6.0}
    """
    out: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(flatten_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


class Telemetry:
    """Appends step and evaluation records to a run's result log (and flat step curves to `telemetry.jsonl`)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.steps = sum(1 for r in run.results.records() if r.get("kind") == "step")
        self.curves = ResultLog(run.dir / CURVES_LOG)

    def step(self, record: dict[str, Any]) -> None:
        """Write one GRPO step's record."""
        self.steps += 1
        self.run.results.append({"key": f"step/{self.steps:05d}", "kind": "step", **record})
        numbers = flatten_numbers({k: v for k, v in record.items() if k not in NOT_CURVES})
        self.curves.append({"key": f"step-{self.steps:06d}", "step": self.steps, "role": record.get("role"), **numbers})

    def evaluation(self, name: str, record: dict[str, Any]) -> None:
        """Write one held-out evaluation's record."""
        self.run.results.append({"key": f"eval/{name}", "kind": "eval", "name": name, **record})

    def phase(self, index: int, role: str, seconds: float, **fields: Any) -> None:
        """Record one phase's wall time (set-up such as rubric writing and pair building included)."""
        record = {"key": f"phase/{index}", "kind": "phase", "phase": index, "role": role, "seconds": seconds}
        self.run.results.append({**record, **fields})

    def skip(self, phase: int, reason: str) -> None:
        """Record that a phase trained nothing, and why (e.g. no pair had an older response in the window)."""
        self.run.results.append({"key": f"skip/{phase}", "kind": "skip", "phase": phase, "reason": reason})

    def records(self, kind: str) -> list[dict[str, Any]]:
        """All records of one kind, in order."""
        return [r for r in self.run.results.records() if r.get("kind") == kind]
