"""`harness report reports/<study>`: report.md, report.html and PNG figures, from stored results only.

Sections: static accuracy per method and subset with CIs; downstream scores with CIs; the inversion plot (static vs
downstream per method, with rank correlations); significance tables with corrected p-values and effect sizes;
ablations; training curves (proxy reward vs gold metric) and rubric telemetry; provenance. Every number comes from
`harness.stats` applied to the per-item results that `harness run` stored; a report never runs a model.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import plots, stats
from harness.report_render import Block, render_html, render_markdown
from harness.results import StudyResults, collect
from harness.significance import significance_table
from harness.store import atomic_write_text
from harness.study import BASE_LABEL, Study, ablation_methods, ablation_parent, load_study

N_RESAMPLES = 2_000
MIN_SUBSET_ITEMS = 5  # per-subset significance rows below this many items are noise, and cost the correction


def fmt(est: Any) -> str:
    """`0.512 [0.43, 0.59]` for an Estimate; `n/a` when undefined."""
    value, low, high = plots.as_triplet(est)
    if math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if math.isnan(low) else f"{value:.3f} [{low:.2f}, {high:.2f}]"


def seeded_rng(*parts: Any) -> np.random.Generator:
    """A generator seeded by the names involved, so a number does not depend on what else the report holds."""
    digest = hashlib.sha256("/".join(map(str, ("report", *parts))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def base_labels(study: Study) -> list[str]:
    """The study's own methods (not ablation grid points), in spec order."""
    return [m.label for m in study.methods]


def _in_order(study: Study, estimates: dict[str, Any]) -> dict[str, Any]:
    """Estimates in spec order: the study's methods, then ablation points, then anything else."""
    order = base_labels(study) + [m.label for _, m in ablation_methods(study)]
    ranked = sorted(estimates, key=lambda m: order.index(m) if m in order else len(order))
    return {m: estimates[m] for m in ranked}


def static_estimates(frame: pd.DataFrame, benchmark: str, column: str = "best_of_n") -> dict[str, stats.Estimate]:
    """Mean credit per method with a bootstrap CI over items."""
    mine = frame[frame.benchmark == benchmark]
    return {
        method: stats.mean_ci(
            group[column].to_numpy(float), rng=seeded_rng(benchmark, method, column), n_resamples=N_RESAMPLES
        )
        for method, group in mine.groupby("method", sort=False)
    }


def downstream_estimates(frame: pd.DataFrame, task: str) -> dict[str, stats.Estimate]:
    """Mean per-item score per method with a bootstrap CI over (seed, item) pairs."""
    mine = frame[frame.task == task]
    return {
        method: stats.mean_ci(group["score"].to_numpy(float), rng=seeded_rng(task, method), n_resamples=N_RESAMPLES)
        for method, group in mine.groupby("method", sort=False)
    }


def aligned(frame: pd.DataFrame, keys: list[str], value: str, methods: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-method arrays over the same items (NaN where a method lacks one), for paired tests."""
    wide = frame.pivot_table(index=keys, columns="method", values=value, aggfunc="first", dropna=False)
    return {m: wide[m].to_numpy(float) for m in methods if m in wide.columns}


def _static_section(study: Study, res: StudyResults, figs: Path) -> list[Block]:
    blocks: list[Block] = [Block.heading("Static preference benchmarks")]
    if res.static.empty:
        return blocks + [Block.paragraph("No static benchmark results are stored for this study.")]
    blocks.append(
        Block.paragraph(
            "Best-of-N accuracy credits 1/k when the chosen response ties k-ways for the top score (RewardBench 2); "
            "pairwise accuracy is the share of (chosen, rejected) pairs won, ties 0.5. Brackets: 95% bootstrap CIs "
            "over items. `chance` is what a random scorer expects."
        )
    )
    for bench, frame in res.static.groupby("benchmark", sort=False):
        best = _in_order(study, static_estimates(res.static, bench))
        pair = static_estimates(res.static, bench, "pairwise")
        chance = float(frame.drop_duplicates("item")["chance"].mean())
        rows = [[m, fmt(best[m]), fmt(pair[m]), best[m].n, best[m].n_dropped] for m in best]
        blocks.append(Block.subheading(f"{bench} (chance best-of-N {chance:.3f})"))
        blocks.append(Block.table(["method", "best-of-N", "pairwise", "items", "unscored"], rows))
        subsets = sorted(frame.subset.unique())
        if len(subsets) > 1:
            sub_rows = []
            for method, group in frame.groupby("method", sort=False):
                means = group.groupby("subset")["best_of_n"].mean()
                sub_rows.append([method, *(f"{means.get(s, math.nan):.3f}" for s in subsets)])
            blocks.append(Block.table(["method (best-of-N)", *subsets], sub_rows))
        fig = plots.accuracy_bars(best, title=f"{bench}: best-of-N accuracy", ylabel="Best-of-N accuracy")
        blocks.append(Block.figure(figs, f"static-{_slug(bench)}", fig, f"{bench}: best-of-N accuracy, 95% CI"))
    return blocks


def _downstream_section(study: Study, res: StudyResults, figs: Path) -> list[Block]:
    blocks: list[Block] = [Block.heading("Downstream: policies trained with each reward")]
    if res.downstream.empty:
        return blocks + [Block.paragraph("No downstream results are stored for this study.")]
    ds = study.downstream
    blocks.append(
        Block.paragraph(
            f"Each method's reward trained a policy from `{ds.base_model}` with preset `{ds.preset}` and the same "
            f"prompts and step budget; seeds {list(study.seeds)}. `{BASE_LABEL}` is `{ds.base_model}` untrained. "
            "Scores are per-item means with 95% bootstrap CIs over (seed, item); with several seeds the IQM across "
            "seeds (stratified bootstrap) is shown too."
        )
    )
    for task, frame in res.downstream.groupby("task", sort=False):
        est = _in_order(study, downstream_estimates(res.downstream, task))
        rows = [[m, fmt(est[m]), est[m].n] for m in est]
        headers = ["method", "score", "items x seeds"]
        if frame.seed.nunique() > 1:
            per_seed = {m: g.groupby("seed")["score"].mean().to_numpy()[:, None] for m, g in frame.groupby("method")}
            iqm = stats.interval_estimates(per_seed, rng=seeded_rng(task, "iqm"), n_resamples=N_RESAMPLES)
            rows = [r + [fmt(iqm[r[0]])] for r in rows]
            headers.append("IQM over seeds")
        blocks += [Block.subheading(task), Block.table(headers, rows)]
        fig = plots.accuracy_bars(est, title=f"{task}: policy score", ylabel="Score")
        blocks.append(Block.figure(figs, f"downstream-{_slug(task)}", fig, f"{task}: score of the trained policies"))
    return blocks


def inversion(study: Study, res: StudyResults) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Static score (first benchmark) and downstream score (mean over all task items) per method, rank correlations."""
    static = static_estimates(res.static, study.benchmarks[0].name)
    pooled = downstream_estimates(res.downstream.assign(task="all"), "all")
    methods = [m for m in static if m in pooled]
    x = [static[m].estimate for m in methods]
    y = [pooled[m].estimate for m in methods]
    corr = {
        kind: stats.rank_correlation(x, y, rng=seeded_rng("inversion", kind), method=kind, n_resamples=N_RESAMPLES)
        for kind in ("spearman", "kendall")
    }
    return {m: static[m] for m in methods}, {m: pooled[m] for m in methods}, corr


def _inversion_section(study: Study, res: StudyResults, figs: Path) -> list[Block]:
    blocks: list[Block] = [Block.heading("Does the static benchmark predict the trained policy? (inversion plot)")]
    if res.static.empty or res.downstream.empty:
        return blocks + [Block.paragraph("Needs both static and downstream results.")]
    static, downstream, corr = inversion(study, res)
    if len(static) < 2:
        return blocks + [Block.paragraph("Fewer than two methods have both static and downstream scores.")]
    fig = plots.inversion_plot(
        static, downstream, correlation=corr["spearman"], xlabel=f"{study.benchmarks[0].name} best-of-N accuracy",
        ylabel="Downstream score (mean over task items)", title="Static benchmark vs trained policy",
    )  # fmt: skip
    rows = [[k, fmt((c.estimate, c.low, c.high)), f"{c.pvalue:.3g}", c.n] for k, c in corr.items()]
    blocks += [
        Block.figure(figs, "inversion", fig, "Each point is a reward method; bars are 95% CIs"),
        Block.table(["rank correlation", "estimate [95% CI]", "p", "methods"], rows),
    ]
    if len(static) < 5:
        blocks.append(
            Block.paragraph(
                f"With {len(static)} methods a rank correlation is weak evidence either way: its bootstrap CI is "
                "degenerate and the exact permutation p-value cannot go below 2/n!."
            )
        )
    return blocks


def _significance_rows(per_item: dict[str, np.ndarray], labels: list[str], subsets: Any, name: str) -> list[list[Any]]:
    pairs = list(itertools.combinations([m for m in labels if m in per_item], 2))
    if not pairs:
        return []
    table = significance_table(
        per_item, pairs, rng=seeded_rng("sig", name), subsets=subsets, min_subset_items=MIN_SUBSET_ITEMS,
        n_resamples=N_RESAMPLES,
    )  # fmt: skip
    return [
        [name, r["comparison"], r["subset"], r["n"], fmt((r["estimate"], r["ci_low"], r["ci_high"])), r["test"],
         f"{r['p']:.3g}", f"{r['p_adjusted']:.3g}", "yes" if r["reject"] else "no", f"{r['cohens_dz']:.2f}"]
        for r in table
    ]  # fmt: skip


def _significance_section(study: Study, res: StudyResults) -> list[Block]:
    rows = significance_rows(study, res)
    text = (
        "Paired comparisons on the same items: difference a - b with a paired bootstrap 95% CI; exact McNemar for "
        "0/1 outcomes, else a paired permutation test; p-values Holm-corrected within each table family; effect "
        f"size Cohen's d_z. Subsets with fewer than {MIN_SUBSET_ITEMS} items get no row of their own."
    )
    headers = ["family", "comparison", "subset", "n", "a - b [95% CI]", "test", "p", "p (Holm)", "sig.", "d_z"]
    body = [Block.table(headers, rows)] if rows else [Block.paragraph("Fewer than two methods: nothing to compare.")]
    return [Block.heading("Significance"), Block.paragraph(text), *body]


def significance_rows(study: Study, res: StudyResults) -> list[list[Any]]:
    """The significance table's rows: static benchmarks (overall and per subset), then each downstream task."""
    labels = base_labels(study)
    rows: list[list[Any]] = []
    for bench, frame in res.static.groupby("benchmark", sort=False) if not res.static.empty else []:
        per_item = aligned(frame, ["item"], "best_of_n", labels)
        subsets = frame.drop_duplicates("item").sort_values("item")["subset"].tolist()
        rows += _significance_rows(per_item, labels, subsets, f"static: {bench}")
    policies = [*labels, BASE_LABEL]  # every trained policy against the others and against the untrained base
    for task, frame in res.downstream.groupby("task", sort=False) if not res.downstream.empty else []:
        per_item = aligned(frame, ["seed", "item"], "score", policies)
        rows += _significance_rows(per_item, policies, None, f"policy: {task}")
    return rows


def _findings_section(study: Study, res: StudyResults) -> list[Block]:
    """What the stored numbers support, read off their CIs and corrected tests by fixed rules (no judgement)."""
    lines: list[str] = []
    if not res.static.empty:
        bench = study.benchmarks[0].name
        best = _in_order(study, static_estimates(res.static, bench))
        frame = res.static[res.static.benchmark == bench]
        chance = float(frame.drop_duplicates("item")["chance"].mean())
        # A degenerate CI (every resample equal, e.g. 0 of 4 items) is no evidence either way.
        decided = {m: e for m, e in best.items() if e.low < e.high}
        above = [m for m, e in decided.items() if e.low > chance]
        below = [m for m, e in decided.items() if e.high < chance]
        unscored = [m for m, e in best.items() if e.n == 0]
        lines.append(
            f"{bench}: best-of-N 95% CI above chance ({chance:.3f}) for {_names(above)}; below chance for "
            f"{_names(below)}; every other method's CI includes chance or is degenerate (no spread over items)."
            + (f" No item was scored by {_names(unscored)}." if unscored else "")
        )
    rows = significance_rows(study, res)
    overall = [r for r in rows if r[2] == "all"]
    significant = [f"{r[1]} ({r[0]}: {r[4]})" for r in overall if r[8] == "yes"]
    lines.append(
        f"{len(significant)} of {len(overall)} overall paired comparisons are significant after Holm correction"
        + (f": {'; '.join(significant)}." if significant else ".")
    )
    if not res.static.empty and not res.downstream.empty:
        static, _, corr = inversion(study, res)
        if len(static) >= 2:
            c = corr["spearman"]
            decided = c.pvalue < 0.05 and (c.low > 0 or c.high < 0)  # a degenerate CI alone decides nothing
            verdict = (
                f"p = {c.pvalue:.3g}, so these data neither show nor rule out an inversion"
                if not decided
                else f"p = {c.pvalue:.3g}: the static ranking predicts the downstream ranking"
                if c.low > 0
                else f"p = {c.pvalue:.3g}: the static ranking is inversely related to the downstream ranking"
            )
            lines.append(
                f"Static vs downstream over {len(static)} methods: Spearman {fmt((c.estimate, c.low, c.high))}; "
                f"{verdict}."
            )
    text = "Read off the CIs and corrected tests below by fixed rules; nothing here is beyond what they show."
    return [Block.heading("What these numbers support"), Block.paragraph(text), *map(Block.paragraph, lines)]


def _names(methods: Sequence[str]) -> str:
    return ", ".join(methods) if methods else "none"


def _ablation_section(study: Study, res: StudyResults, figs: Path) -> list[Block]:
    if not study.ablations or res.static.empty:
        return []
    blocks: list[Block] = [Block.heading("Ablations")]
    bench = study.benchmarks[0].name
    est = static_estimates(res.static, bench)
    for i, ablation in enumerate(study.ablations):
        points = [m.label for a, m in ablation_methods(study) if a is ablation and m.label in est]
        parent = ablation_parent(study, ablation).label
        shown = ([parent] if parent in est else []) + points
        rows = [[label, fmt(est[label]), est[label].n] for label in shown]
        blocks += [
            Block.subheading(f"{ablation.method}: {', '.join(ablation.grid)}"),
            Block.table(["variant", f"{bench} best-of-N", "items"], rows),
        ]
        fig = plots.ablation_bars({k: est[k] for k in shown}, baseline=parent if parent in est else None,
                                  title=f"{ablation.method} ablation on {bench}")  # fmt: skip
        blocks.append(Block.figure(figs, f"ablation-{i}", fig, f"{ablation.method} ablation"))
    return blocks


# Counters that runs log with their steps (co-evolution's phase and cycle numbers): positions, not measurements.
STEP_COUNTERS = ("phase", "cycle", "global_step", "policy_step", "phase_step")
# Rubric telemetry drawn first when a run logs it (co-evolution runs log dozens of numbers per step).
TELEMETRY_FIRST = [
    "reward_mean",
    "rubrics.criteria_mean",
    "rubrics.label_only_share",
    "rubrics.value_embedding_share",
    "pool.criteria",
    "train_pair_utility",
    "pool.churn",
]


def _curves_section(res: StudyResults, figs: Path) -> list[Block]:
    blocks: list[Block] = []
    if not res.curves.empty and {"proxy_reward", "gold_accuracy"} <= set(res.curves.columns):
        blocks.append(Block.heading("Training curves"))
        for method, g in res.curves.groupby("method", sort=False):
            mean = g.groupby("step")[["proxy_reward", "gold_accuracy"]].mean().reset_index()
            gold = mean.dropna(subset=["gold_accuracy"])
            fig = plots.step_curves(
                {"proxy reward": (mean.step.to_numpy(), mean.proxy_reward.to_numpy(float))},
                right={"gold accuracy": (gold.step.to_numpy(), gold.gold_accuracy.to_numpy(float))},
                ylabel="Proxy reward (mean over seeds)", right_ylabel="Gold accuracy on the probe set",
                title=f"Over-optimisation monitor: {method}",
            )  # fmt: skip
            caption = f"{method}: proxy reward (solid) vs held-out gold accuracy (dashed), mean over seeds"
            blocks.append(Block.figure(figs, f"curves-{_slug(method)}", fig, caption))
    if not res.telemetry.empty:
        numeric = [
            c for c in res.telemetry.columns if c not in ("method", "seed", "source", "step", "key", *STEP_COUNTERS)
        ]
        numeric = [c for c in numeric if pd.api.types.is_numeric_dtype(res.telemetry[c])]
        numeric = sorted(numeric, key=lambda c: TELEMETRY_FIRST.index(c) if c in TELEMETRY_FIRST else 99)[:6]
        blocks.append(Block.heading("Rubric telemetry"))
        for col in numeric:
            # Co-evolution logs both roles' steps: one line per (method, seed, role); other runs have no role.
            frame = res.telemetry.dropna(subset=[col])
            frame = frame.assign(role=frame["role"].fillna("") if "role" in frame else "")
            # A method that trains while fitting (static units) and again for its policy has two runs: "fit", "train".
            series = {
                " ".join(str(k) for k in (method, f"s{seed}", source, role) if k): (
                    g.step.to_numpy(),
                    g[col].to_numpy(float),
                )
                for (method, seed, source, role), g in frame.groupby(["method", "seed", "source", "role"])
            }
            fig = plots.step_curves(series, ylabel=col, title=col)
            blocks.append(Block.figure(figs, f"telemetry-{_slug(col)}", fig, col))
    return blocks


def _provenance_section(res: StudyResults) -> list[Block]:
    env = next((m.get("environment") for m in res.manifests if m.get("environment")), {}) or {}
    packages = ", ".join(f"{k} {v}" for k, v in sorted(env.get("packages", {}).items()))
    rows = [[u.id, u.kind, f"{u.wall_s:.1f}"] for u in res.units.itertuples()]
    where = f"Python {env.get('python', '?')} on {env.get('platform', '?')}; git {env.get('git', '?')[:12]}"
    total = res.units.wall_s.sum() / 60
    return [
        Block.heading("Provenance"),
        Block.paragraph(f"{where}; {packages}."),
        Block.paragraph(f"{len(res.units)} units, {total:.1f} minutes of compute in total (wall time per unit below)."),
        Block.table(["unit", "kind", "wall s"], rows),
    ]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def build(study: Study, res: StudyResults, figs: Path) -> list[Block]:
    """All report blocks, in reading order."""
    head = [Block.title(f"Study: {study.name}"), Block.paragraph(study.description or "")]
    return [
        *head,
        *_findings_section(study, res),
        *_static_section(study, res, figs),
        *_downstream_section(study, res, figs),
        *_inversion_section(study, res, figs),
        *_significance_section(study, res),
        *_ablation_section(study, res, figs),
        *_curves_section(res, figs),
        *_provenance_section(res),
    ]


def write_report(study_dir: str | Path, runs_root: str | Path | None = None) -> Path:
    """Write report.md, report.html and figures/ into the study folder; returns the markdown path."""
    study = load_study(study_dir)
    root = Path(runs_root) if runs_root else default_runs_root(study)
    res = collect(root)
    if res.units.empty:
        raise FileNotFoundError(f"no finished units under {root}: run `harness run {study.path}` first")
    figs = study.dir / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    before = set(figs.glob("*.png"))
    blocks = build(study, res, figs)
    atomic_write_text(study.dir / "report.md", render_markdown(blocks, study.dir))
    atomic_write_text(study.dir / "report.html", render_html(blocks, study.dir))
    drawn = {b.path for b in blocks if b.kind == "figure"}
    for stale in before - drawn:  # figures of an earlier report that this one no longer shows
        stale.unlink()
    return study.dir / "report.md"


def default_runs_root(study: Study) -> Path:
    """Where `harness run` keeps a study's units: `runs/<study name>/`."""
    return Path("runs") / study.name
