"""Study specs: `reports/<study>/study.yaml` names methods, benchmarks, downstream tasks, seeds and ablation grids.

A spec is flat YAML with no includes; unknown keys are rejected with the file and line they are on. `plan(study)`
expands it into units (static scoring, policy training, policy evaluation), each with a stable id derived from its
content, so that a re-run finds finished units by id and skips them.

```yaml
name: smoke
methods:
  - length
  - {name: bt_rm, kwargs: {preset: cpu}}
benchmarks:
  - {name: healthbench-ideal, limit: 20}
downstream: {base_model: smollm2-135m, preset: cpu-smoke, tasks: [ifeval_local], limit: 10}
seeds: [0, 1]
ablations:
  - {method: evolm, grid: {period: [2, 4]}}
```
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.cache import content_key

TOP_KEYS = {"name", "description", "methods", "benchmarks", "downstream", "seeds", "ablations"}
METHOD_KEYS = {"name", "label", "kwargs"}
BENCHMARK_KEYS = {"name", "limit", "split"}
DOWNSTREAM_KEYS = {"base_model", "preset", "tasks", "limit", "steps", "prompts", "options", "methods", "max_gen_toks"}
ABLATION_KEYS = {"method", "grid", "downstream"}
BASE_LABEL = "base model"  # the untrained base policy's label in downstream results


class SpecError(ValueError):
    """A study spec that cannot be used; the message starts with `file:line`."""


@dataclass(frozen=True)
class MethodSpec:
    """A reward method as a study uses it: registry name, constructor kwargs and the label reports show."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)


@dataclass(frozen=True)
class BenchmarkSpec:
    """A static benchmark, how many of its items to use (None = all) and which fold (`all`, `train`, `eval`).

    Use `split: eval` when a method of the study trains on the train fold of the same data (bt_rm trains on
    HealthBench's train fold by default), so that no method is scored on what it saw.
    """

    name: str
    limit: int | None = None
    split: str = "all"


@dataclass(frozen=True)
class DownstreamSpec:
    """Policy training and evaluation settings, the same for every method of the study."""

    base_model: str = "smollm2-135m"
    preset: str = "cpu-smoke"
    tasks: tuple[str, ...] = ()
    limit: int | None = None
    steps: int | None = None
    prompts: str = "default"
    options: Mapping[str, Any] = field(default_factory=dict)
    methods: tuple[str, ...] | None = None  # labels of the methods that train policies (None: all of them)
    max_gen_toks: int | None = None  # cap on generated tokens in evaluation (None: each task's own)


@dataclass(frozen=True)
class Ablation:
    """A grid over one method's kwargs; every grid point becomes a method of its own."""

    method: str
    grid: Mapping[str, tuple[Any, ...]]
    downstream: bool = False


@dataclass(frozen=True)
class Study:
    """A parsed study spec."""

    name: str
    path: Path
    methods: tuple[MethodSpec, ...]
    benchmarks: tuple[BenchmarkSpec, ...] = ()
    downstream: DownstreamSpec | None = None
    seeds: tuple[int, ...] = (0,)
    ablations: tuple[Ablation, ...] = ()
    description: str = ""

    @property
    def dir(self) -> Path:
        """The study's folder (`reports/<study>/`), where its report is written."""
        return self.path.parent


@dataclass(frozen=True)
class Unit:
    """One resumable piece of work: `kind` is static, train or eval; `needs` names the units it reads from."""

    kind: str
    method: MethodSpec
    config: Mapping[str, Any]
    needs: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """Readable, content-derived id: the same spec always yields the same id."""
        digest = content_key(
            "unit",
            unit_kind=self.kind,
            name=self.method.name,
            kwargs=dict(self.method.kwargs),
            config=dict(self.config),
        )[:8]
        parts = [self.kind, _slug(self.method.label)]
        parts += [f"{k}-{_slug(str(v))}" for k, v in self.config.items() if k in ("benchmark", "seed", "task")]
        return "__".join(parts + [digest])


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text).strip("-")


# ------------------------------------------------------------------------------------------------ parsing
class _Where:
    """Finds the line of a key path in the YAML source, for error messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        try:
            self.root = yaml.compose(text)
        except yaml.YAMLError:
            self.root = None

    def __call__(self, *keys: str | int) -> str:
        """`file:line` of the deepest node on the key path that exists."""
        node, line = self.root, 1
        for key in keys:
            if node is None:
                break
            line = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
            else:
                node = None
        if node is not None:
            line = node.start_mark.line + 1
        return f"{self.path}:{line}"


def _check_keys(value: Any, allowed: set[str], where: _Where, *keys: str | int) -> dict[str, Any]:
    name = ".".join(str(k) for k in keys) or "the spec"
    if not isinstance(value, dict):
        raise SpecError(f"{where(*keys)}: {name} must be a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise SpecError(f"{where(*keys, unknown[0])}: unknown key {unknown[0]!r} in {name}; allowed: {sorted(allowed)}")
    return value


def _method(value: Any, where: _Where, i: int) -> MethodSpec:
    if isinstance(value, str):
        return MethodSpec(value)
    raw = _check_keys(value, METHOD_KEYS, where, "methods", i)
    if not isinstance(raw.get("name"), str):
        raise SpecError(f"{where('methods', i)}: methods[{i}].name must be a method name")
    kwargs = raw.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise SpecError(f"{where('methods', i, 'kwargs')}: methods[{i}].kwargs must be a mapping")
    return MethodSpec(raw["name"], kwargs, str(raw.get("label") or ""))


def _benchmark(value: Any, where: _Where, i: int) -> BenchmarkSpec:
    if isinstance(value, str):
        return BenchmarkSpec(value)
    raw = _check_keys(value, BENCHMARK_KEYS, where, "benchmarks", i)
    limit = raw.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise SpecError(f"{where('benchmarks', i, 'limit')}: benchmarks[{i}].limit must be a positive integer")
    split = raw.get("split", "all")
    if split not in ("all", "train", "eval"):
        raise SpecError(f"{where('benchmarks', i, 'split')}: benchmarks[{i}].split must be all, train or eval")
    return BenchmarkSpec(str(raw.get("name")), limit, split)


def _downstream(value: Any, where: _Where) -> DownstreamSpec | None:
    if value is None:
        return None
    raw = _check_keys(value, DOWNSTREAM_KEYS, where, "downstream")
    tasks = raw.get("tasks") or []
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise SpecError(f"{where('downstream', 'tasks')}: downstream.tasks must be a list of task names")
    methods = raw.get("methods")
    if methods is not None and (not isinstance(methods, list) or not all(isinstance(m, str) for m in methods)):
        raise SpecError(f"{where('downstream', 'methods')}: downstream.methods must be a list of method labels")
    return DownstreamSpec(**{**raw, "tasks": tuple(tasks), "methods": None if methods is None else tuple(methods)})


def _ablation(value: Any, where: _Where, i: int) -> Ablation:
    raw = _check_keys(value, ABLATION_KEYS, where, "ablations", i)
    grid = raw.get("grid")
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise SpecError(f"{where('ablations', i, 'grid')}: ablations[{i}].grid must map kwargs to non-empty lists")
    return Ablation(str(raw.get("method")), {k: tuple(v) for k, v in grid.items()}, bool(raw.get("downstream")))


def load_study(path: str | Path) -> Study:
    """Parse and validate a study spec; errors name the file and line."""
    path = Path(path)
    if path.is_dir():
        path = path / "study.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no study spec at {path}")
    text = path.read_text(encoding="utf-8")
    where = _Where(path, text)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(f"{path}:{mark.line + 1 if mark else 1}: invalid YAML ({exc})") from None
    raw = _check_keys(raw, TOP_KEYS, where)
    methods = raw.get("methods") or []
    if not isinstance(methods, list) or not methods:
        raise SpecError(f"{where('methods')}: a study needs a non-empty list of methods")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise SpecError(f"{where('seeds')}: seeds must be a non-empty list of integers")
    study = Study(
        name=str(raw.get("name") or path.parent.name),
        path=path,
        methods=tuple(_method(m, where, i) for i, m in enumerate(methods)),
        benchmarks=tuple(_benchmark(b, where, i) for i, b in enumerate(raw.get("benchmarks") or [])),
        downstream=_downstream(raw.get("downstream"), where),
        seeds=tuple(seeds),
        ablations=tuple(_ablation(a, where, i) for i, a in enumerate(raw.get("ablations") or [])),
        description=str(raw.get("description") or ""),
    )
    labels = [m.label for m in study.methods]
    if BASE_LABEL in labels:
        raise SpecError(f"{where('methods')}: the label {BASE_LABEL!r} is reserved for the untrained base model")
    if len(set(labels)) != len(labels):
        raise SpecError(f"{where('methods')}: method labels must be unique (give repeated methods a label)")
    unknown = sorted(set(study.downstream.methods or ()) - set(labels)) if study.downstream else []
    if unknown:
        raise SpecError(f"{where('downstream', 'methods')}: downstream.methods names unknown methods {unknown}")
    known = set(labels) | {m.name for m in study.methods}
    for i, ablation in enumerate(study.ablations):
        if ablation.method not in known and ablation.method not in _installed_methods():
            raise SpecError(
                f"{where('ablations', i, 'method')}: ablations[{i}].method {ablation.method!r} is neither a method "
                f"label of this study {sorted(labels)} nor an installed method"
            )
    return study


def _installed_methods() -> set[str]:
    from harness.methods import available_methods

    return {m.name for m in available_methods()}


# ----------------------------------------------------------------------------------------------- planning
def ablation_parent(study: Study, ablation: Ablation) -> MethodSpec:
    """The method an ablation varies.

    That is the study's method with the ablation's `method` as label, else the first with it as name, else the
    installed method of that name with default kwargs.
    """
    by_label = {m.label: m for m in study.methods}
    by_name = {m.name: m for m in reversed(study.methods)}
    return by_label.get(ablation.method) or by_name.get(ablation.method) or MethodSpec(ablation.method)


def ablation_methods(study: Study) -> list[tuple[Ablation, MethodSpec]]:
    """Every grid point of every ablation as its own method, labelled by the kwargs it changes."""
    out = []
    for ablation in study.ablations:
        parent = ablation_parent(study, ablation)
        keys = list(ablation.grid)
        for values in itertools.product(*(ablation.grid[k] for k in keys)):
            change = dict(zip(keys, values, strict=True))
            label = f"{parent.label}[{','.join(f'{k}={v}' for k, v in change.items())}]"
            out.append((ablation, MethodSpec(parent.name, {**parent.kwargs, **change}, label)))
    return out


def plan(study: Study) -> list[Unit]:
    """Expand a study into units, dependencies first (static, train, eval)."""
    grid = ablation_methods(study)
    static_methods = list(study.methods) + [m for _, m in grid]
    ds = study.downstream
    chosen = None if ds is None or ds.methods is None else set(ds.methods)
    trained_methods = [m for m in study.methods if chosen is None or m.label in chosen]
    trained_methods += [m for a, m in grid if a.downstream]
    units = [
        Unit("static", m, {"benchmark": b.name, "limit": b.limit, "split": b.split})
        for m in static_methods
        for b in study.benchmarks
    ]
    if ds is None or not ds.tasks:
        return units
    train_config = {
        "base_model": ds.base_model,
        "preset": ds.preset,
        "steps": ds.steps,
        "prompts": ds.prompts,
        "options": dict(ds.options),
    }
    # The untrained base model, evaluated like the policies: what training with each reward changed.
    base = MethodSpec("base-model", label=BASE_LABEL)
    eval_config = {"limit": ds.limit, "max_gen_toks": ds.max_gen_toks, "policy": ds.base_model}
    units += [Unit("eval", base, {"task": t, **eval_config, "seed": s}) for s in study.seeds for t in ds.tasks]
    for m in trained_methods:
        for seed in study.seeds:
            train = Unit("train", m, {**train_config, "seed": seed})
            units.append(train)
            units += [
                Unit(
                    "eval",
                    m,
                    {"task": t, "limit": ds.limit, "max_gen_toks": ds.max_gen_toks, "seed": seed, "policy": train.id},
                    needs=(train.id,),
                )
                for t in ds.tasks
            ]
    return units
