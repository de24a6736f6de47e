"""Command line for one co-evolution fit: `python -m baselines.evolm --preset cpu --workdir runs/evolm-cpu`.

Prints the run summary (telemetry totals, held-out utility before and after, label-noise audit) as JSON and
writes it to `<workdir>/summary-<method>-<preset>.json`; the per-step telemetry is in the run store.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.cli import parse_assignments
from harness.methods import FitContext, create_method


def main(method: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Fit `method` with a preset and overrides; print and save the summary."""
    parser = argparse.ArgumentParser(prog=f"python -m baselines.{method}", description=__doc__)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    instance: Any = create_method(method, preset=args.preset, **parse_assignments(args.set))
    instance.fit(FitContext(workdir=args.workdir, seed=args.seed))
    summary = {"method": method, "preset": args.preset, "command_seconds": time.perf_counter() - started}
    summary |= {"policy_dir": str(instance.policy_dir), "summary": instance.summary}
    text = json.dumps(summary, indent=1, default=str)
    (args.workdir / f"summary-{method}-{args.preset}.json").write_text(text)
    print(text)
    return summary
