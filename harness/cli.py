"""Command line: `harness methods | models | generate | serve | demo | bench decode`.

Each subcommand is a thin wrapper over a library function; heavy modules are imported inside the handler so
`harness methods` answers instantly.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence


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
    from harness.bench.decode import main as bench_decode

    bench_decode(args.rest)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=(handler.__doc__ or "").strip())
        p.set_defaults(handler=handler)
        return p

    add("methods", cmd_methods)
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
    bench = sub.add_parser("bench", help="performance benchmarks").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("decode", help=cmd_bench_decode.__doc__)
    p.set_defaults(handler=cmd_bench_decode)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark")
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
