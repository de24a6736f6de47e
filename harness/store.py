"""Run store: one directory per run with a manifest and an append-only per-item result log.

```
runs/<run_id>/manifest.json   config, seeds, model and data hashes, package versions (atomic writes)
runs/<run_id>/items.jsonl     one result per line, appended and fsynced as each item finishes
```
A run killed at any point (SIGKILL included) and started again keeps every finished item, drops a torn last
line, and skips finished keys, so no item is lost or duplicated.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

SCHEMA_VERSION = 1
TRACKED_PACKAGES = ("reward-harness", "torch", "transformers", "trl", "lm-eval", "vllm", "numpy", "scipy")
T = TypeVar("T")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see either the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def environment() -> dict[str, Any]:
    """Python, platform, versions of the packages that change results, and the git revision."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "git": rev,
    }


class ResultLog:
    """Append-only JSONL of per-item results, keyed by the `key` field of each record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records = self._read_and_repair()
        self._keys = {r["key"] for r in self._records}

    def _read_and_repair(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        # Only newline-terminated lines are finished; a torn tail from a killed write is cut off.
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(end)
        records = []
        for lineno, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.path}:{lineno}: corrupt result line ({exc.msg})") from exc
        return records

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[dict[str, Any]]:
        """All finished records, in the order they were written."""
        return list(self._records)

    def append(self, record: dict[str, Any]) -> None:
        """Write one finished record durably; a key may be written only once."""
        key = record.get("key")
        if not isinstance(key, str):
            raise ValueError(f"result record needs a string 'key' field, got {key!r}")
        if key in self._keys:
            raise ValueError(f"{self.path}: key {key!r} is already recorded")
        line = json.dumps(record, ensure_ascii=False, allow_nan=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._records.append(record)
        self._keys.add(key)


class Run:
    """A run directory: manifest plus result log. Re-opening a run with the same config resumes it."""

    def __init__(self, root: Path | str, run_id: str, config: dict[str, Any]) -> None:
        self.dir = Path(root) / run_id
        self.manifest_path = self.dir / "manifest.json"
        if self.manifest_path.exists():
            self.manifest = json.loads(self.manifest_path.read_text())
            if self.manifest.get("config") != config:
                changed = sorted(
                    k
                    for k in set(config) | set(self.manifest.get("config", {}))
                    if config.get(k) != self.manifest.get("config", {}).get(k)
                )
                raise ValueError(
                    f"run {self.dir} exists with a different config (fields {changed}); "
                    "use another run id or delete the directory"
                )
            self.manifest.setdefault("resumed_at", []).append(time.time())
        else:
            self.manifest = {
                "schema_version": SCHEMA_VERSION,
                "run_id": run_id,
                "created_at": time.time(),
                "config": config,
                "environment": environment(),
            }
        self.save_manifest()
        self.results = ResultLog(self.dir / "items.jsonl")

    def note(self, **fields: Any) -> None:
        """Add provenance (model hashes, data hashes, timings) to the manifest and save it."""
        self.manifest.update(fields)
        self.save_manifest()

    def save_manifest(self) -> None:
        """Write the manifest atomically."""
        atomic_write_text(self.manifest_path, json.dumps(self.manifest, indent=1, sort_keys=True))


def run_pending(
    log: ResultLog,
    items: Sequence[T],
    key: Callable[[T], str],
    compute: Callable[[list[T]], Iterable[dict[str, Any]]],
    batch_size: int = 8,
    desc: str = "items",
) -> list[dict[str, Any]]:
    """Compute records for the items whose key is not in `log`, a batch at a time, writing each as it finishes.

    `compute(batch)` returns one record per item (the `key` field is filled in here). Returns all records of
    `items`, finished earlier or now, in item order.
    """
    pending = [it for it in items if key(it) not in log]
    with tqdm(total=len(items), initial=len(items) - len(pending), desc=desc) as bar:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            for item, record in zip(batch, compute(batch), strict=True):
                log.append({"key": key(item), **record})
                bar.update(1)
    by_key = {r["key"]: r for r in log.records()}
    return [by_key[key(it)] for it in items]
