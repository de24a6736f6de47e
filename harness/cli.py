"""Command line: `harness methods | models | benchmarks | generate | serve | demo | train | eval | bench ...`.

Each subcommand is a thin wrapper over a library function; heavy modules are imported inside the handler so
`harness methods` answers instantly.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.study import MethodSpec


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render rows as a fixed-width text table.

    >>> print(format_table(["a", "bb"], [[1, "x"]]))
    a  bb
    -  --
    1  x
    """
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_methods(args: argparse.Namespace) -> None:
    """List installed reward methods."""
    from harness.methods import available_methods

    rows = [[m.name, m.kind, m.package, m.summary] for m in available_methods()]
    print(format_table(["name", "kind", "package", "summary"], rows))


def cmd_models(args: argparse.Namespace) -> None:
    """List the model catalog and whether each model is already cached."""
    from harness.catalog import CATALOG, cache_dir

    rows = []
    for entry in CATALOG.values():
        cached = (cache_dir() / "models" / entry.name).is_dir()
        rows.append([entry.name, "yes" if cached else "no", entry.description])
    print(format_table(["name", "cached", "description"], rows))
    print(f"\ncache: {cache_dir()} (set HARNESS_CACHE_DIR to move it); any local path or hub id also works")


def cmd_generate(args: argparse.Namespace) -> None:
    """Generate replies to prompts given on the command line."""
    from harness.backends import make_backend
    from harness.types import GenerationParams, user_chat

    backend = make_backend(args.model)
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    for prompt, reply in zip(args.prompt, backend.generate([user_chat(p) for p in args.prompt], params), strict=True):
        print(json.dumps({"prompt": prompt, "reply": reply}, ensure_ascii=False))


def cmd_serve(args: argparse.Namespace) -> None:
    """Serve a model over an OpenAI-compatible chat-completions API."""
    from harness.serve import run_server

    run_server(args.model, host=args.host, port=args.port)


def cmd_demo(args: argparse.Namespace) -> None:
    """Score real HealthBench items with two reward methods and print a table."""
    from harness.demo import run_demo

    run_demo(n_items=args.items, methods=args.method or ["length", "random"], runs_root=args.runs)


def cmd_bench_decode(args: argparse.Namespace) -> None:
    """Measure decode tokens/s against the memory-bandwidth roofline."""
    from harness.bench.decode import bench

    bench(args)


def cmd_bench_backward(args: argparse.Namespace) -> None:
    """Measure peak memory of one GRPO micro-batch's backward pass, with and without activation checkpointing."""
    from harness.bench.backward import bench

    bench(args)


def cmd_bench_judge(args: argparse.Namespace) -> None:
    """Measure judge verdicts/s: shared-prefix vs unshared vs a naive generate-per-criterion judge."""
    from harness.bench.judge import bench

    bench(args)


def _benchmark_options(args: argparse.Namespace) -> dict[str, object]:
    options = parse_assignments(args.option)
    if args.data_root:
        options["root"] = args.data_root
    return options


def cmd_benchmarks(args: argparse.Namespace) -> None:
    """List static preference benchmarks, or build one (`--build NAME`) and report its counts and build time."""
    from harness.bench.static import available_benchmarks, build_benchmark

    if args.build:
        built = build_benchmark(args.build, args.limit, refresh=args.refresh, **_benchmark_options(args))
        how = "loaded from cache" if built.from_cache else "built"
        print(json.dumps(built.stats, indent=1, default=str))
        print(f"{args.build}: {len(built.items)} items, {how} in {built.seconds:.1f} s ({built.path or 'not cached'})")
        return
    rows = []
    for b in available_benchmarks(**_benchmark_options(args)):
        items = str(b.items) if b.items is not None else ("not built" if b.cached else "needs --data-root")
        rows.append([b.name, items, b.description])
    rows.append(["PATH.jsonl", "", "any preference JSONL file (docs/preference-jsonl.md)"])
    print(format_table(["name", "items", "description"], rows))


def method_specs(names: Sequence[str], assignments: Sequence[str] = ()) -> list[MethodSpec]:
    """Methods by name, with `METHOD.KEY=VALUE` kwargs; a method with kwargs is labelled `name[key=value,...]`.

    >>> [m.label for m in method_specs(["length", "bt_rm"], ["bt_rm.epochs=2"])]
    ['length', 'bt_rm[epochs=2]']
    """
    from harness.study import MethodSpec

    if len(set(names)) < len(names):
        raise ValueError("--method: each method once; several settings of one method need a study spec (`harness run`)")
    kwargs: dict[str, dict[str, Any]] = {name: {} for name in names}
    for assignment in assignments:
        target, sep, rest = assignment.partition(".")
        if not sep or target not in kwargs:
            raise ValueError(f"--method-arg {assignment!r}: expected METHOD.KEY=VALUE with METHOD one of {list(names)}")
        kwargs[target].update(parse_assignments([rest]))
    out = []
    for name, given in kwargs.items():
        label = f"{name}[{','.join(f'{k}={v}' for k, v in given.items())}]" if given else name
        out.append(MethodSpec(name, given, label))
    return out


def cmd_bench_static(args: argparse.Namespace) -> None:
    """Score a static preference benchmark with reward methods: accuracies per subset with 95% bootstrap CIs."""
    from harness.bench.static_run import metrics_table, run_static

    options = _benchmark_options(args)
    methods = method_specs(args.method, args.method_arg or ())
    run_dir, metrics = run_static(methods, args.benchmark, args.limit, args.runs, args.seed, args.split, **options)
    print(format_table(*metrics_table(metrics)))
    print(f"\nmetrics: {run_dir / 'metrics.json'}\nper-item scores: {run_dir / 'items.jsonl'}")


def parse_assignments(items: Sequence[str] | None) -> dict[str, object]:
    """Parse `KEY=VALUE` options; a VALUE that is valid JSON is decoded, anything else stays a string.

    >>> parse_assignments(["preset=test", "lr=0.1", "on=true"])
    {'preset': 'test', 'lr': 0.1, 'on': True}
    """
    out: dict[str, object] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_train(args: argparse.Namespace) -> None:
    """Train a policy with a reward method (GRPO, or the method's own training); resumes an unfinished run."""
    from harness.rl import TrainRequest, train_run

    kwargs = tuple(sorted(parse_assignments(args.method_arg).items()))
    request = TrainRequest(args.method, args.preset, args.seed, kwargs, args.model, args.steps, args.lora)
    run = train_run(request, args.runs)
    print(json.dumps({"run": str(run.dir), "policy": run.manifest.get("policy"), "wall_s": run.manifest.get("wall_s")}))


def cmd_compare(args: argparse.Namespace) -> None:
    """Paired tests between policies evaluated by `harness eval`: mean per run, then every pair, per task."""
    from pathlib import Path

    from harness.compare import compare_runs, label_of, load_scores, render
    from harness.store import atomic_write_text

    runs: dict[str, Path] = {}
    for arg in args.runs:
        label, sep, path = arg.rpartition("=")
        run_dir = Path(path)
        label = label if sep else label_of(run_dir)
        if label in runs:
            raise ValueError(f"runs: two runs are labelled {label!r}; name them with LABEL=PATH")
        runs[label] = run_dir
    if len(runs) < 2:
        raise ValueError("runs: give at least two `harness eval` run folders to compare")
    text = render(*compare_runs(load_scores(runs)))
    if args.out:
        atomic_write_text(Path(args.out), text)
        print(f"compare: {args.out}")
    else:
        print(text, end="")


def cmd_curve(args: argparse.Namespace) -> None:
    """Write a training run's proxy-vs-gold curve as JSON: proxy reward and gold probe accuracy per logged step."""
    from pathlib import Path

    from harness.monitor import curve
    from harness.store import atomic_write_text

    run_dir = Path(args.run)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"run: {run_dir} is not a training run (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    config = manifest.get("config", {})
    keys = ("method", "method_kwargs", "preset", "seed", "base_model")
    data = {"run": str(run_dir), **{k: config.get(k) for k in keys}, "train_wall_s": manifest.get("wall_s")}
    text = json.dumps(data | {"curve": curve(run_dir)}, indent=1) + "\n"
    if args.out:
        atomic_write_text(Path(args.out), text)
        print(f"curve: {args.out}")
    else:
        print(text, end="")


def cmd_eval(args: argparse.Namespace) -> None:
    """Evaluate a policy with lm-eval on the local tasks; per-item results go to the run store, resumably."""
    from harness.downstream import EvalSettings, evaluate, open_eval_run

    tasks = [t for arg in args.task for t in arg.split(",") if t]
    settings = EvalSettings(
        batch_size=args.batch_size, max_gen_toks=args.max_gen_toks, device=args.device, backend=args.backend
    )
    run, policy_dir = open_eval_run(args.policy, args.runs, settings)
    scores = evaluate(policy_dir, tasks, args.limit, run, settings, chunk_size=args.chunk_size)
    rows = [[task, metric, f"{value:.4f}"] for task, values in scores.items() for metric, value in values.items()]
    print(format_table(["task", "metric", "value"], rows))
    print(f"\nper-item results: {run.results.path}")


def cmd_run(args: argparse.Namespace) -> None:
    """Run a study spec: expand it into units and run the unfinished ones (local or Ray executor)."""
    from pathlib import Path

    from harness.executor import run_local, run_ray
    from harness.report import default_runs_root
    from harness.study import load_study, plan
    from harness.units import run_study_unit

    study = load_study(args.study)
    units = plan(study)
    root = Path(args.runs) if args.runs else default_runs_root(study)
    print(f"study {study.name}: {len(units)} units under {root}")
    if args.executor == "ray":
        run_ray(units, root, run_study_unit, address=args.ray_address)
    else:
        run_local(units, root, run_study_unit, keep_going=args.keep_going, isolate=not args.in_process)


def cmd_report(args: argparse.Namespace) -> None:
    """Write report.md, report.html and figures for a study from its stored results (runs no model)."""
    from harness.report import write_report

    print(f"report: {write_report(args.study, args.runs)}")


def _add_benchmark_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="folder holding the public preference sets (llmbar/, pandalm/, ...)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="benchmark builder option (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=(handler.__doc__ or "").strip())
        p.set_defaults(handler=handler)
        return p

    add("methods", cmd_methods)
    p = add("benchmarks", cmd_benchmarks)
    p.add_argument("--build", metavar="NAME", help="build (or load from cache) one benchmark and report it")
    p.add_argument("--limit", type=int, help="at most N items")
    p.add_argument("--refresh", action="store_true", help="rebuild even if a cached build exists")
    _add_benchmark_options(p)
    add("models", cmd_models)
    p = add("generate", cmd_generate)
    p.add_argument("prompt", nargs="+")
    p.add_argument("--model", default="hf:smollm2-135m", help="backend spec KIND:MODEL")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p = add("serve", cmd_serve)
    p.add_argument("model", help="backend spec KIND:MODEL, e.g. hf:smollm2-135m")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p = add("demo", cmd_demo)
    p.add_argument("--items", type=int, default=6)
    p.add_argument("--method", action="append", help="reward method (repeatable)")
    p.add_argument("--runs", default="runs", help="root directory of the run store")
    p = add("train", cmd_train)
    p.add_argument("--method", required=True, help="reward method (see `harness methods`)")
    p.add_argument("--preset", default="cpu-smoke", help="test | cpu-smoke | cpu | gpu (harness.rl.PRESETS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method-arg", action="append", metavar="KEY=VALUE", help="method factory argument (repeatable)")
    p.add_argument("--model", help="base policy (default: the preset's)")
    p.add_argument("--steps", type=int, help="step budget (default: the preset's)")
    p.add_argument("--lora", action=argparse.BooleanOptionalAction, default=None, help="LoRA instead of full tuning")
    p.add_argument("--runs", default="runs", help="root directory of the run store")
    p = add("eval", cmd_eval)
    p.add_argument("--policy", required=True, help="training run directory, model directory or catalog name")
    p.add_argument("--task", action="append", required=True, help="ifeval_local, math_verified, healthbench_rubric")
    p.add_argument("--limit", type=int, help="first N documents of each task")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-gen-toks", type=int, help="cap on generated tokens (default: each task's YAML value)")
    p.add_argument("--chunk-size", type=int, default=64, help="documents per lm-eval call (the unit of resumption)")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--backend", choices=["harness", "hf"], default="harness", help="lm-eval model: harness (cached) or hf (HFLM)"
    )
    p.add_argument("--runs", default="runs", help="root directory of the run store")
    p = add("compare", cmd_compare)
    p.add_argument("runs", nargs="+", help="`harness eval` run folders (runs/eval-...), each optionally LABEL=PATH")
    p.add_argument("--out", help="Markdown file to write (default: print)")
    p = add("curve", cmd_curve)
    p.add_argument("run", help="training run directory (runs/train-...)")
    p.add_argument("--out", help="JSON file to write (default: print)")
    p = add("run", cmd_run)
    p.add_argument("study", help="a study spec (reports/<study>/study.yaml) or its folder")
    p.add_argument("--runs", help="where units are stored (default: runs/<study name>)")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--keep-going", action="store_true", help="run the other units when one fails")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="local executor: run every unit in this process (default: each in a child process, freeing its memory)",
    )
    p = add("report", cmd_report)
    p.add_argument("study", help="the study folder (reports/<study>) or its study.yaml")
    p.add_argument("--runs", help="where the units are stored (default: runs/<study name>)")
    bench = sub.add_parser("bench", help="performance benchmarks").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("decode", help=cmd_bench_decode.__doc__)
    p.set_defaults(handler=cmd_bench_decode)
    from harness.bench.decode import add_arguments as add_decode_arguments  # light: no torch at import

    add_decode_arguments(p)
    p = bench.add_parser("judge", help=cmd_bench_judge.__doc__)
    p.set_defaults(handler=cmd_bench_judge)
    from harness.bench.judge import add_arguments as add_judge_arguments  # light: no torch at import

    add_judge_arguments(p)
    p = bench.add_parser("backward", help=cmd_bench_backward.__doc__)
    p.set_defaults(handler=cmd_bench_backward)
    from harness.bench.backward import add_arguments as add_backward_arguments  # light: no torch at import

    add_backward_arguments(p)
    p = bench.add_parser("static", help=cmd_bench_static.__doc__)
    p.set_defaults(handler=cmd_bench_static)
    p.add_argument("--method", action="append", required=True, help="reward method (repeatable)")
    p.add_argument(
        "--method-arg", action="append", metavar="METHOD.KEY=VALUE", help="a method's factory argument (repeatable)"
    )
    p.add_argument("--benchmark", required=True, help="benchmark name (see `harness benchmarks`) or a .jsonl path")
    p.add_argument("--limit", type=int, help="first N items")
    p.add_argument("--seed", type=int, default=0, help="seed for method fitting and the bootstrap")
    p.add_argument("--split", default="all", help="all | eval | train: items by fold (eval for trained methods)")
    p.add_argument("--runs", default="runs", help="root directory of the run store")
    _add_benchmark_options(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `harness` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"harness {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
