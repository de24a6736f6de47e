"""Paired comparison of policies evaluated by `harness eval`, outside a study: `harness compare EVAL_RUN ...`.

Each evaluation run stores one record per item (`items.jsonl`); policies are compared on the items both were
scored on, with the statistics of the study report (`harness.report`): the mean per policy with a bootstrap CI,
and for every pair the paired difference with its CI, exact McNemar for 0/1 scores (else a paired permutation
test), Holm-corrected within each task.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report import N_RESAMPLES, aligned, downstream_estimates, fmt, seeded_rng
from harness.report_render import Block, render_markdown
from harness.results import eval_item_scores
from harness.significance import significance_table


def label_of(run_dir: Path) -> str:
    """A run's name for tables: what `harness eval` named it after (`eval-<policy>-<hash>` gives `<policy>`).

    >>> label_of(Path("runs/eval-train-length-cpu-s0-bee2d348"))
    'train-length-cpu-s0'
    """
    name = Path(run_dir).name
    found = re.fullmatch(r"eval-(.+)-[0-9a-f]{8}", name)
    return found.group(1) if found else name


def load_scores(runs: Mapping[str, Path]) -> pd.DataFrame:
    """One row per (run label, task, item) with the item's score; a run without scored items is an error."""
    rows = []
    for label, run_dir in runs.items():
        found = eval_item_scores(Path(run_dir)) if (Path(run_dir) / "items.jsonl").is_file() else []
        if not found:
            raise ValueError(f"{run_dir}: no evaluated items (no items.jsonl records); pass `harness eval` run folders")
        rows += [{"method": label, **row} for row in found]
    return pd.DataFrame(rows)


def compare_runs(frame: pd.DataFrame) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per task: each run's mean with its CI, and every pair's paired comparison (`significance_table` rows)."""
    means: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    labels = list(dict.fromkeys(frame["method"]))
    for task in sorted(set(frame["task"])):
        for label, est in downstream_estimates(frame, task).items():
            means.append({"task": task, "method": label, "n": est.n, "mean": est.estimate, "ci": fmt(est)})
        per_item = aligned(frame[frame.task == task], ["item"], "score", labels)  # the runs that have this task
        pairs = list(itertools.combinations(per_item, 2))
        if pairs:
            table = significance_table(per_item, pairs, rng=seeded_rng("compare", task), n_resamples=N_RESAMPLES)
            rows += [{"task": task, **r} for r in table]
    return means, rows


def render(means: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    """The two tables as Markdown."""
    text = (
        "Paired on the items both runs were scored on: difference a - b with a paired bootstrap 95% CI; exact McNemar "
        "for 0/1 scores, else a paired permutation test; p-values Holm-corrected within each task."
    )
    blocks = [
        Block.heading("Mean score per run"),
        Block.table(["task", "run", "n", "mean [95% CI]"], [[m["task"], m["method"], m["n"], m["ci"]] for m in means]),
        Block.heading("Paired comparisons"),
        Block.paragraph(text),
        Block.table(
            ["task", "comparison", "n", "a - b [95% CI]", "test", "p", "p (Holm)", "sig."], [_row(r) for r in rows]
        ),
    ]
    return render_markdown(blocks, Path("."))


def _row(r: dict[str, Any]) -> list[Any]:
    diff = fmt((r["estimate"], r["ci_low"], r["ci_high"]))
    significant = "yes" if r["reject"] else "no"
    return [r["task"], r["comparison"], r["n"], diff, r["test"], f"{r['p']:.3g}", f"{r['p_adjusted']:.3g}", significant]
