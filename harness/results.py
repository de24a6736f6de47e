"""Read a study's stored results into tidy tables; nothing here runs a model.

Each finished unit has a `unit.json` record (harness.executor); its per-item results live in the run store under
the unit's directory. `collect` turns them into pandas frames that the report computes its statistics from.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.executor import UNIT_FILE
from harness.store import ResultLog
from harness.units import SCORES_RUN

# The per-item metric a downstream task is compared on (the first metric of its lm-eval task YAML).
PRIMARY_METRIC = {
    "ifeval_local": "prompt_level_strict_acc",
    "math_verified": "exact_match",
    "healthbench_rubric": "rubric_score",
}
STEP_LOG = "steps.jsonl"
TELEMETRY_LOG = "telemetry.jsonl"


@dataclass
class StudyResults:
    """Everything the report reads, as tidy frames (one row per item, step or unit)."""

    units: pd.DataFrame
    static: pd.DataFrame = field(default_factory=pd.DataFrame)
    downstream: pd.DataFrame = field(default_factory=pd.DataFrame)
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    telemetry: pd.DataFrame = field(default_factory=pd.DataFrame)
    manifests: list[dict[str, Any]] = field(default_factory=list)


def unit_records(root: Path) -> list[dict[str, Any]]:
    """Every finished unit's record under `root`, sorted by id."""
    return [json.loads(p.read_text()) for p in sorted(Path(root).glob(f"*/{UNIT_FILE}"))]


def _static_rows(unit: dict[str, Any], where: Path) -> list[dict[str, Any]]:
    rows = []
    for r in ResultLog(where / SCORES_RUN / "items.jsonl").records():
        rows.append(
            {
                "method": unit["method"]["label"],
                "benchmark": unit["config"]["benchmark"],
                "item": r["id"],
                "subset": r["subset"],
                "best_of_n": r["credit"],
                "pairwise": r["pair_credit"],
                "chance": 1.0 / (1 + len(r["rejected_scores"])),
            }
        )
    return rows


def _as_float(value: Any) -> float:
    if isinstance(value, list):  # instance-level metrics are lists; the prompt-level mean is their item score
        return float(sum(value) / len(value)) if value else math.nan
    return math.nan if value is None else float(value)


def eval_item_scores(run_dir: Path, task: str | None = None) -> list[dict[str, Any]]:
    """Per-item scores of a `harness eval` run (its primary metric): `task`, `item`, `score`; one task or all."""
    rows = []
    for r in ResultLog(Path(run_dir) / "items.jsonl").records():
        if task is not None and r.get("task") != task:
            continue
        metric = PRIMARY_METRIC.get(r["task"])
        value = r["metrics"].get(metric) if metric else next(iter(r["metrics"].values()), None)
        rows.append({"task": r["task"], "item": str(r["item_id"]), "score": _as_float(value)})
    return rows


def _downstream_rows(unit: dict[str, Any]) -> list[dict[str, Any]]:
    labels = {"method": unit["method"]["label"], "seed": unit["config"]["seed"]}
    return [labels | row for row in eval_item_scores(Path(unit["summary"]["run_dir"]), unit["config"]["task"])]


def _step_rows(unit: dict[str, Any], name: str, where: str = "run_dir") -> list[dict[str, Any]]:
    """Step records under the unit's run (`source` "train") or the method's own fit (`source` "fit")."""
    rows = []
    source = "fit" if where == "fit_dir" else "train"
    for path in sorted(Path(unit["summary"][where]).rglob(name)):
        for r in ResultLog(path).records():
            rows.append(
                {"method": unit["method"]["label"], "seed": unit["config"].get("seed", 0), "source": source, **r}
            )
    return rows


def _manifest(unit: dict[str, Any], root: Path) -> dict[str, Any] | None:
    where = Path(unit["summary"].get("run_dir") or Path(root) / unit["id"] / SCORES_RUN)
    path = where / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def collect(root: Path) -> StudyResults:
    """Gather the stored results of every finished unit under `root`."""
    units = unit_records(root)
    static, downstream, curves, telemetry, manifests = [], [], [], [], []
    for unit in units:
        if unit["kind"] == "static":
            static += _static_rows(unit, Path(root) / unit["id"])
            if unit["summary"].get("fit_dir"):  # the method's own training (co-evolution) logged telemetry
                telemetry += _step_rows(unit, TELEMETRY_LOG, "fit_dir")
        elif unit["kind"] == "eval":
            downstream += _downstream_rows(unit)
        elif unit["kind"] == "train":
            curves += _step_rows(unit, STEP_LOG)
            telemetry += _step_rows(unit, TELEMETRY_LOG)
        manifest = _manifest(unit, root)
        if manifest is not None:
            manifests.append(manifest)
    frame = pd.DataFrame(
        [
            {
                "id": u["id"],
                "kind": u["kind"],
                "method": u["method"]["label"],
                "wall_s": u["wall_s"],
                "seed": u["config"].get("seed"),
            }
            for u in units
        ]
    )
    return StudyResults(
        frame, pd.DataFrame(static), pd.DataFrame(downstream), pd.DataFrame(curves), pd.DataFrame(telemetry), manifests
    )
