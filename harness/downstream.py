"""Evaluate a trained policy with lm-eval on the local task YAMLs in `tasks/lmeval/`, one stored record per item.

lm-eval runs the documents of a task in chunks (`simple_evaluate(samples=...)`); each finished item (prompt,
response, per-item metrics) is appended to the run store as soon as its chunk ends, so a killed evaluation resumes
where it stopped and paired tests between policies can match items by `(task, doc_id)`. Task scores are computed
from the stored per-item metrics with the task's own lm-eval aggregation functions, which is what lm-eval does
internally: `tests/test_downstream.py` checks that they equal the numbers of lm-eval's CLI.

The model answering lm-eval's requests is `harness` by default (`harness.lmeval_model`: the harness's CPU decode
loop, every reply cached by content hash, so a re-run recomputes nothing) or lm-eval's own HFLM (`backend="hf"`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from harness.store import Run, atomic_write_text

if TYPE_CHECKING:
    from harness.cache import Cache

TASKS = ("ifeval_local", "math_verified", "healthbench_rubric")
BACKENDS = ("harness", "hf")


@dataclass(frozen=True)
class EvalSettings:
    """How lm-eval runs the policy; part of the eval run's config (results under other settings are not reused).

    `max_gen_toks=None` keeps each task's YAML value (1280 for IFEval, as in lm-eval's own `ifeval`). `backend` is
    the lm-eval model: `harness` (fast CPU decode, cached replies) or `hf` (lm-eval's HFLM, never cached).
    """

    batch_size: int = 8
    max_gen_toks: int | None = None
    apply_chat_template: bool = True
    device: str = "auto"
    backend: str = "harness"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"EvalSettings.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")

    def resolved_device(self) -> str:
        """`auto` means CUDA when available, else CPU."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def task_dir() -> Path:
    """The folder of the harness's lm-eval task YAMLs (pass it to lm-eval's `--include_path`)."""
    import tasks

    return Path(tasks.__file__).parent / "lmeval"


def task_manager() -> Any:
    """An lm-eval TaskManager over our task folder only (indexing lm-eval's thousands of built-in YAMLs is slow)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(task_dir()), include_defaults=False)


def load_task(name: str, manager: Any) -> Any:
    """The lm-eval Task object for one of our task names."""
    if name not in TASKS:
        raise ValueError(f"unknown downstream task {name!r}; choose from {', '.join(TASKS)}")
    return manager.load([name])["tasks"][name]


def _doc_id(doc: dict[str, Any], index: int) -> str:
    for field in ("key", "id", "prompt_id"):
        if field in doc:
            return str(doc[field])
    return str(index)


def sample_record(task: str, sample: dict[str, Any]) -> dict[str, Any]:
    """The stored form of one lm-eval logged sample: ids, prompt, response and every per-item metric."""
    args = sample["arguments"][0]
    prompt = args["arg_0"] if isinstance(args, dict) else args[0]
    return {
        "task": task,
        "doc_id": sample["doc_id"],
        "item_id": _doc_id(sample["doc"], sample["doc_id"]),
        "prompt": prompt,
        "response": sample["filtered_resps"][0],
        "metrics": {m: sample[m] for m in sample["metrics"]},
        "doc_hash": sample["doc_hash"],
    }


def _lm(policy_dir: Path, settings: EvalSettings, cache: Cache | None) -> Any:
    device = settings.resolved_device()
    if settings.backend == "harness":
        from harness.lmeval_model import HarnessLM

        return HarnessLM(str(policy_dir), device=device, batch_size=settings.batch_size, cache=cache)
    from lm_eval.models.huggingface import HFLM

    return HFLM(
        pretrained=str(policy_dir),
        device=device,
        dtype="float32" if device == "cpu" else "auto",  # bf16 is ~5x slower on CPUs without native bf16
        batch_size=settings.batch_size,
    )


def _run_chunk(lm: Any, manager: Any, task: str, indices: list[int], settings: EvalSettings) -> list[dict[str, Any]]:
    from lm_eval import simple_evaluate

    gen_kwargs = {"max_gen_toks": settings.max_gen_toks} if settings.max_gen_toks else None
    out = simple_evaluate(
        model=lm,
        tasks=[task],
        samples={task: sorted(indices)},
        task_manager=manager,
        log_samples=True,
        apply_chat_template=settings.apply_chat_template,
        gen_kwargs=gen_kwargs,
        bootstrap_iters=0,  # aggregates are recomputed from all stored items; chunk statistics are discarded
    )
    return [sample_record(task, s) for s in out["samples"][task]]


def aggregate(task_obj: Any, records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Apply the task's lm-eval aggregation functions to the per-item metrics, in document order."""
    records = sorted(records, key=lambda r: r["doc_id"])
    out: dict[str, float] = {"n": float(len(records))}
    for metric, fn in task_obj.aggregation().items():
        out[metric] = float(fn([r["metrics"][metric] for r in records]))
    return out


def evaluate(
    policy_dir: str | Path,
    tasks: Sequence[str],
    limit: int | None,
    run: Run,
    settings: EvalSettings | None = None,
    chunk_size: int = 64,
    cache: Cache | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate the policy saved in `policy_dir` on `tasks` (first `limit` documents each), resumably.

    Per-item records go to `run.results` under the key `<task>/<doc_id>`; the task scores are written to
    `results.json` in the run directory and returned as `{task: {metric: value, "n": items}}`. `cache` holds the
    replies of the `harness` backend (default: the harness cache).
    """
    settings = settings or EvalSettings()
    manager, lm, scores = task_manager(), None, {}
    for task in tasks:
        task_obj = load_task(task, manager)
        n_docs = len(task_obj.eval_docs)
        indices = list(range(n_docs if limit is None else min(limit, n_docs)))
        pending = [i for i in indices if f"{task}/{i}" not in run.results]
        with tqdm(total=len(indices), initial=len(indices) - len(pending), desc=f"eval {task}") as bar:
            for start in range(0, len(pending), chunk_size):
                lm = lm or _lm(Path(policy_dir), settings, cache)
                for record in _run_chunk(lm, manager, task, pending[start : start + chunk_size], settings):
                    run.results.append({"key": f"{task}/{record['doc_id']}", **record})
                    bar.update(1)
        done = {r["key"]: r for r in run.results.records()}
        scores[task] = aggregate(task_obj, [done[f"{task}/{i}"] for i in indices])
    path = run.dir / "results.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    # NaN (nothing scored) is written as null: results.json stays strict JSON for other tools.
    clean = {t: {m: None if math.isnan(v) else v for m, v in values.items()} for t, values in scores.items()}
    atomic_write_text(path, json.dumps({**previous, **clean}, indent=1, sort_keys=True))
    return scores


def resolve_policy(policy: str | Path) -> tuple[Path, str]:
    """A policy directory and a label for run ids, from a training run directory, a model directory or a name.

    A finished training run directory (written by `harness train`) names its policy in its manifest; a catalog name
    such as `smollm2-135m` evaluates the untrained base model.
    """
    from harness import catalog
    from harness.rl import finished_policy

    path = Path(policy).expanduser()
    if (trained := finished_policy(path)) is not None:
        return trained, path.name
    if (path / "config.json").is_file():
        return path, path.name
    if path.is_dir():
        raise FileNotFoundError(f"{path}: neither a model directory nor a finished training run")
    return Path(catalog.resolve(str(policy))), str(policy).replace("/", "_")


def open_eval_run(policy: str | Path, runs_root: str | Path, settings: EvalSettings) -> tuple[Run, Path]:
    """The run-store entry for evaluating `policy` under `settings` (re-opening it resumes the evaluation)."""
    from harness import catalog
    from harness.cache import content_key
    from tasks.lmeval.hooks import judge_spec

    policy_dir, label = resolve_policy(policy)
    config = {
        "kind": "downstream-eval",
        "policy": str(policy_dir),
        "policy_fingerprint": catalog.fingerprint(str(policy_dir)),
        "settings": asdict(settings),
        "judge": judge_spec(),
    }
    # Settings are part of the id: an evaluation under other settings is another run, not a config clash.
    return Run(runs_root, f"eval-{label}-{content_key('eval-run', config=config)[:8]}", config), policy_dir
