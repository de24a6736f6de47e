"""Run a study's units: each in its own directory, finished ones skipped, dependencies first.

A unit is finished when its `unit.json` exists (written atomically, last). The local executor runs units one after
another, each in a fresh child process by default (`isolate`), so the memory a unit's models held is returned to the
system when it ends instead of piling up across units; the Ray executor runs each dependency wave as Ray tasks (a
cluster, or a local Ray instance for tests). All call the same `run_unit` function, so results do not depend on the
executor.
"""

from __future__ import annotations

import json
import multiprocessing
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from harness.store import atomic_write_text
from harness.study import Unit

UNIT_FILE = "unit.json"
Runner = Callable[[Unit, Path, dict[str, Path]], dict[str, Any]]


def unit_dir(root: Path, unit: Unit) -> Path:
    """Where a unit keeps its files."""
    return Path(root) / unit.id


def finished(root: Path, unit: Unit) -> dict[str, Any] | None:
    """The unit's record if it has finished, else None."""
    path = unit_dir(root, unit) / UNIT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def run_unit(unit: Unit, root: Path, runner: Runner) -> dict[str, Any]:
    """Run one unit unless it has finished; write its record last, so a crash leaves it pending, not half-done."""
    done = finished(root, unit)
    if done is not None:
        return done
    where = unit_dir(root, unit)
    where.mkdir(parents=True, exist_ok=True)
    deps = {need: Path(root) / need for need in unit.needs}
    missing = [n for n, p in deps.items() if not (p / UNIT_FILE).is_file()]
    if missing:
        raise RuntimeError(f"unit {unit.id} needs unfinished units: {', '.join(missing)}")
    start = time.time()
    summary = runner(unit, where, deps)
    record = {
        "id": unit.id,
        "kind": unit.kind,
        "method": asdict(unit.method) | {"kwargs": dict(unit.method.kwargs)},
        "config": dict(unit.config),
        "needs": list(unit.needs),
        "summary": summary,
        "wall_s": time.time() - start,
        "finished_at": time.time(),
    }
    atomic_write_text(where / UNIT_FILE, json.dumps(record, indent=1, default=str))
    return record


def waves(units: Sequence[Unit]) -> list[list[Unit]]:
    """Group units so that every unit comes after the units it needs."""
    ids = {u.id for u in units}
    placed: set[str] = set()
    remaining = list(units)
    out = []
    while remaining:
        wave = [u for u in remaining if all(n in placed or n not in ids for n in u.needs)]
        if not wave:
            raise ValueError(f"circular unit dependencies among {[u.id for u in remaining]}")
        out.append(wave)
        placed |= {u.id for u in wave}
        remaining = [u for u in remaining if u.id not in placed]
    return out


def run_in_child(unit: Unit, root: Path, runner: Runner) -> dict[str, Any]:
    """`run_unit` in a fresh (spawned) Python process; its exceptions are raised here."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run_unit, unit, Path(root), runner).result()


def run_local(
    units: Sequence[Unit], root: Path, runner: Runner, keep_going: bool = False, isolate: bool = False
) -> list[dict[str, Any]]:
    """Run units one after another, in dependency order, with a progress bar; returns the finished records.

    With `keep_going`, a failing unit is reported and the others still run (its dependants are skipped). With
    `isolate`, each unit runs in its own child process (`runner` must then be importable by name: a module-level
    function); a child costs a few seconds of imports, and frees all of the unit's memory when it exits.
    """
    run_one = run_in_child if isolate else run_unit
    records, failed = [], set()
    todo = [u for wave in waves(units) for u in wave]
    done_before = sum(finished(root, u) is not None for u in todo)
    with tqdm(total=len(todo), initial=done_before, desc="units") as bar:
        for unit in todo:
            if finished(root, unit) is not None:
                records.append(finished(root, unit))
                continue
            if failed & set(unit.needs):
                failed.add(unit.id)
                continue
            bar.set_postfix_str(unit.id[:60])
            try:
                records.append(run_one(unit, root, runner))
            except Exception:
                if not keep_going:
                    raise
                failed.add(unit.id)
                tqdm.write(f"unit {unit.id} failed:\n{traceback.format_exc()}")
            bar.update(1)
    return records


def run_ray(units: Sequence[Unit], root: Path, runner: Runner, **init: Any) -> list[dict[str, Any]]:
    """Run each dependency wave as parallel Ray tasks (starts or joins Ray with `ray.init(**init)`)."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("the ray executor needs Ray: pip install 'reward-harness[ray]'") from exc
    if not ray.is_initialized():
        ray.init(**init)
    remote = ray.remote(run_unit)
    records = []
    for wave in tqdm(waves(units), desc="unit waves"):
        records += ray.get([remote.remote(u, Path(root), runner) for u in wave])
    return records
