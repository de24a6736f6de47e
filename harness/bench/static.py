"""Static preference benchmarks by name: a registry, a build cache, and `load_benchmark`.

A benchmark is a builder function `builder(limit=None, **options) -> Built | list[PreferenceItem]` marked with
`@benchmark(name, description)` and listed under the entry-point group `harness.benchmarks`; the built-ins in
`tasks/` register exactly like third-party plug-ins. Builders that sample a model (`cached=True`) are stored on
disk under a content hash of (name, version, builder source, options, limit), so a second build is instant.
A path to a preference JSONL file (docs/preference-jsonl.md) works wherever a name does.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from harness.cache import content_key
from harness.catalog import cache_dir
from harness.data import load_preference_jsonl, save_preference_jsonl
from harness.store import atomic_write_text
from harness.types import PreferenceItem

ENTRY_POINT_GROUP = "harness.benchmarks"
Builder = Callable[..., Any]


@dataclass
class Built:
    """A builder's output: the items and counts worth reporting (prompts skipped, constructions used, ...)."""

    items: list[PreferenceItem]
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildRecord:
    """A benchmark as loaded: items, builder stats, and where and how fast it was built."""

    name: str
    items: list[PreferenceItem]
    stats: dict[str, Any]
    seconds: float
    path: Path | None
    from_cache: bool


@dataclass(frozen=True)
class BenchmarkInfo:
    """A registered benchmark as `harness benchmarks` lists it."""

    name: str
    description: str
    package: str
    cached: bool
    items: int | None


def benchmark(name: str, description: str, cached: bool = False, version: str = "1") -> Callable[[Builder], Builder]:
    """Mark a builder as the benchmark `name`; `cached` builds are stored on disk (bump `version` to rebuild)."""

    def mark(builder: Builder) -> Builder:
        builder.benchmark_name = name  # type: ignore[attr-defined]
        builder.benchmark_description = description  # type: ignore[attr-defined]
        builder.benchmark_cached = cached  # type: ignore[attr-defined]
        builder.benchmark_version = version  # type: ignore[attr-defined]
        return builder

    return mark


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_builder(name: str) -> Builder:
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none (is reward-harness installed?)"
        raise KeyError(f"unknown benchmark {name!r}; registered: {known}; or pass a path to a .jsonl file")
    builder = eps[name].load()
    if not callable(builder) or not hasattr(builder, "benchmark_name"):
        raise TypeError(f"benchmark {name!r} ({eps[name].value}) is not a builder marked with @benchmark(...)")
    return builder


def _is_path(name: str) -> bool:
    return name.endswith(".jsonl") or "/" in name or Path(name).is_file()


def benchmark_cache_dir() -> Path:
    """Where built benchmarks are stored (`$HARNESS_CACHE_DIR/benchmarks`)."""
    return cache_dir() / "benchmarks"


def _build_key(builder: Builder, limit: int | None, options: dict[str, Any]) -> str:
    # The builder's own source is part of the key, so editing it invalidates old builds without a manual bump.
    source = Path(inspect.getsourcefile(builder) or "").read_bytes()
    return content_key(
        "benchmark",
        name=builder.benchmark_name,
        version=builder.benchmark_version,
        source=hashlib.sha256(source).hexdigest(),
        limit=limit,
        options=options,
    )


def _cache_paths(builder: Builder, limit: int | None, options: dict[str, Any], root: Path) -> tuple[Path, Path]:
    stem = f"{builder.benchmark_name}-{_build_key(builder, limit, options)[:16]}"
    return root / f"{stem}.jsonl", root / f"{stem}.build.json"


def _as_built(result: Built | list[PreferenceItem]) -> Built:
    return result if isinstance(result, Built) else Built(list(result))


def build_benchmark(
    name: str, limit: int | None = None, cache_root: Path | None = None, refresh: bool = False, **options: Any
) -> BuildRecord:
    """Build (or load from the cache) a benchmark by name or JSONL path; `limit` caps the number of items."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of items, got {limit}")
    start = time.perf_counter()
    if _is_path(name) and name not in _entry_points():
        items = load_preference_jsonl(name)[:limit]
        return BuildRecord(name, items, {}, time.perf_counter() - start, Path(name), False)
    builder = _load_builder(name)
    if not builder.benchmark_cached:
        built = _as_built(builder(limit=limit, **options))
        return BuildRecord(name, built.items[:limit], built.stats, time.perf_counter() - start, None, False)
    items_path, info_path = _cache_paths(builder, limit, options, cache_root or benchmark_cache_dir())
    if items_path.is_file() and info_path.is_file() and not refresh:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        items = load_preference_jsonl(items_path)
        return BuildRecord(name, items, info["stats"], time.perf_counter() - start, items_path, True)
    built = _as_built(builder(limit=limit, **options))
    items, seconds = built.items[:limit], time.perf_counter() - start
    save_preference_jsonl(items, items_path)
    info = {"name": name, "limit": limit, "options": options, "n_items": len(items), "build_seconds": seconds}
    atomic_write_text(info_path, json.dumps({**info, "stats": built.stats}, indent=1, sort_keys=True, default=str))
    return BuildRecord(name, items, built.stats, seconds, items_path, False)


def load_benchmark(name: str, limit: int | None = None, **options: Any) -> list[PreferenceItem]:
    """The items of a registered benchmark (e.g. `healthbench-ideal`) or of a preference JSONL file.

    Options go to the builder, e.g. `root=` for the public sets (`llmbar`, `pandalm`, ...) or `n_samples=` for
    the sampled ones. `limit` keeps the first `limit` items (sampled benchmarks stop building there).
    """
    return build_benchmark(name, limit, **options).items


def _cached_count(builder: Builder) -> int | None:
    _, info_path = _cache_paths(builder, None, {}, benchmark_cache_dir())
    if info_path.is_file():
        return int(json.loads(info_path.read_text(encoding="utf-8"))["n_items"])
    return None


def _accepted(builder: Builder, options: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(builder).parameters
    return {k: v for k, v in options.items() if k in params}


def _describe(ep: EntryPoint, options: dict[str, Any]) -> BenchmarkInfo:
    package = ep.dist.name if ep.dist is not None else "?"
    try:
        builder = ep.load()
    except Exception as exc:  # a broken plug-in must not hide the others
        return BenchmarkInfo(ep.name, f"unloadable: {type(exc).__name__}: {exc}", package, False, None)
    cached = bool(getattr(builder, "benchmark_cached", False))
    items: int | None = None
    if cached:
        items = _cached_count(builder)
    else:
        try:
            items = len(_as_built(builder(**_accepted(builder, options))).items)
        except (FileNotFoundError, ValueError, KeyError):
            items = None  # e.g. a public set whose folder was not given
    return BenchmarkInfo(ep.name, getattr(builder, "benchmark_description", ""), package, cached, items)


def available_benchmarks(**options: Any) -> list[BenchmarkInfo]:
    """Every registered benchmark, sorted by name, with its item count where it is known without sampling.

    `options` (e.g. `root=` for the public sets) go to the builders that accept them.
    """
    return [_describe(ep, options) for _, ep in sorted(_entry_points().items())]
