"""Evaluations and performance benchmarks."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any


def cli_main(
    prog: str,
    doc: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    bench: Callable[[argparse.Namespace], Any],
    argv: Sequence[str] | None,
) -> int:
    """Parse `argv` with a benchmark's options and run it; a ValueError becomes a usage error naming the option."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        bench(args)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


def write_report(out: Any, report: dict[str, Any]) -> None:
    """Write a benchmark's JSON report atomically (a killed run leaves the old one) and say where."""
    import json
    import sys

    from harness.store import atomic_write_text

    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
