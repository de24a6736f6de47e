import itertools
import math

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.text import Annotation

from harness import plots
from harness.stats import Estimate, RankCorrelation

METHODS = ["bt_rm", "expert_rubrics", "external_rubrics", "evolm", "evorubric", "length"]


def estimates(values, half_width=0.05):
    return {m: Estimate(v, v - half_width, v + half_width, n=100) for m, v in zip(METHODS, values, strict=False)}


def tick_labels(ax, axis="x"):
    ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t.get_text() for t in ticks]


def assert_renders(fig, path):
    assert isinstance(fig, Figure)
    fig.savefig(path)
    assert path.stat().st_size > 5_000


def boxes_overlap(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_as_triplet_accepts_estimates_mappings_tuples_and_numbers():
    assert plots.as_triplet(Estimate(0.5, 0.4, 0.6, n=3)) == (0.5, 0.4, 0.6)
    assert plots.as_triplet({"estimate": 0.5, "low": 0.4, "high": 0.6}) == (0.5, 0.4, 0.6)
    assert plots.as_triplet((0.5, 0.4, 0.6)) == (0.5, 0.4, 0.6)
    est, low, high = plots.as_triplet(0.5)
    assert est == 0.5 and math.isnan(low) and math.isnan(high)


def test_accuracy_bars_flat_has_one_bar_and_error_bar_per_method(tmp_path):
    fig = plots.accuracy_bars(estimates([0.7, 0.65, 0.6, 0.72, 0.68, 0.52]))
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    errs = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert sum(len(b) for b in bars) == 6 and len(errs) == 6
    assert tick_labels(ax) == METHODS and ax.get_ylabel() == "Accuracy" and ax.get_title()
    heights = [b.patches[0].get_height() for b in bars]
    assert heights == pytest.approx([0.7, 0.65, 0.6, 0.72, 0.68, 0.52])
    assert_renders(fig, tmp_path / "bars.png")


def test_accuracy_bars_by_subset_groups_and_legend(tmp_path):
    subsets = ["healthbench-ideal", "precise-if", "math-verified"]
    values = {m: {s: (0.5, 0.4, 0.6) for s in subsets} for m in METHODS}
    fig = plots.accuracy_bars(values, title="By subset")
    ax = fig.axes[0]
    assert tick_labels(ax) == subsets
    assert [t.get_text() for t in ax.get_legend().get_texts()] == METHODS
    assert sum(len(c) for c in ax.containers if isinstance(c, BarContainer)) == 18
    assert_renders(fig, tmp_path / "bars_subsets.png")
    with pytest.raises(ValueError, match="values: nothing to plot"):
        plots.accuracy_bars({})


def test_accuracy_bar_tick_labels_do_not_overlap_for_six_long_names():
    fig = plots.accuracy_bars(estimates([0.5] * 6))
    fig.canvas.draw()
    ticks = fig.axes[0].get_xticklabels()
    angle = math.radians(ticks[0].get_rotation())
    assert angle > 0  # long names are slanted, so their axis-aligned boxes may overlap; test the slanted strips
    anchors = [fig.axes[0].transData.transform((tick.get_position()[0], 0))[0] for tick in ticks]
    line_height = ticks[0].get_fontsize() * fig.dpi / 72 * 1.2
    # Parallel slanted labels anchored dx apart are dx * sin(angle) apart perpendicular to their baselines.
    assert min(np.diff(anchors)) * math.sin(angle) > line_height


def test_inversion_plot_labels_every_method_without_overlap(tmp_path):
    # A tight cluster: every method within a few hundredths on both axes.
    static = {m: (0.6 + 0.01 * i, 0.55 + 0.01 * i, 0.65 + 0.01 * i) for i, m in enumerate(METHODS)}
    downstream = {m: (0.3 + 0.004 * (-1) ** i * i, 0.28, 0.33) for i, m in enumerate(METHODS)}
    rho = RankCorrelation("spearman", -0.2, -0.9, 0.7, 0.7, n=6)
    fig = plots.inversion_plot(static, downstream, correlation=rho)
    ax = fig.axes[0]
    labels = [c for c in ax.get_children() if isinstance(c, Annotation)]
    assert sorted(t.get_text() for t in labels) == sorted(METHODS)
    assert len([c for c in ax.containers if isinstance(c, ErrorbarContainer)]) == 6
    assert "Spearman ρ = -0.20 [-0.90, 0.70], n = 6" in ax.get_title()
    assert ax.get_xlabel() == "Static benchmark score" and ax.get_ylabel() == "Downstream score"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(boxes_overlap(a, b) for a, b in itertools.combinations(boxes, 2))
    frame = ax.get_window_extent(renderer)
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)
    assert_renders(fig, tmp_path / "inversion.png")


def test_inversion_plot_rejects_unmatched_methods_and_tolerates_missing_ci():
    with pytest.raises(ValueError, match=r"unmatched: \['evolm'\]"):
        plots.inversion_plot({"bt_rm": 0.5, "evolm": 0.6}, {"bt_rm": 0.3})
    fig = plots.inversion_plot({"a": 0.5, "b": (0.6, math.nan, math.nan)}, {"a": 0.3, "b": 0.4})
    assert "\n" not in fig.axes[0].get_title()  # no correlation given, no second line


def test_step_curves_left_and_right_axes_with_band(tmp_path):
    steps = np.arange(0, 100, 10)
    gold = (steps, 0.3 + steps / 1000, 0.25 + steps / 1000, 0.35 + steps / 1000)
    fig = plots.step_curves(
        {"proxy reward": (steps, np.log1p(steps)), "kl": np.linspace(0, 1, 10)},
        right={"gold accuracy": gold},
        ylabel="Proxy reward",
        right_ylabel="Gold accuracy",
    )
    left, right = fig.axes
    assert len(left.get_lines()) == 2 and len(right.get_lines()) == 1
    assert right.get_lines()[0].get_linestyle() == "--" and right.get_ylabel() == "Gold accuracy"
    assert len([c for c in right.collections if isinstance(c, PolyCollection)]) == 1  # the CI band
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["proxy reward", "kl", "gold accuracy"]
    assert_renders(fig, tmp_path / "curves.png")


def test_step_curves_errors():
    with pytest.raises(ValueError, match=r"series\['x'\]: 3 steps but 2 values"):
        plots.step_curves({"x": ([0, 1, 2], [0.1, 0.2])})
    with pytest.raises(ValueError, match="series: nothing to plot"):
        plots.step_curves({})


def test_ablation_bars_marks_baseline_and_keeps_order(tmp_path):
    values = {"full": (0.6, 0.55, 0.65), "no stage 1": (0.55, 0.5, 0.6), "no stage 2": 0.58, "no age window": 0.61}
    fig = plots.ablation_bars(values, baseline="full", title="EvoRubric ablation", xlabel="Pairwise accuracy")
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)][0]
    assert len(bars) == 4 and [p.get_width() for p in bars] == pytest.approx([0.6, 0.55, 0.58, 0.61])
    assert tick_labels(ax, "y") == ["full (baseline)", "no stage 1", "no stage 2", "no age window"]
    assert list(ax.get_yticks()) == [3, 2, 1, 0]  # the first variant is drawn on top
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_xdata()[0] == pytest.approx(0.6)
    assert_renders(fig, tmp_path / "ablation.png")
    with pytest.raises(ValueError, match="baseline: 'none' is not one of the variants"):
        plots.ablation_bars(values, baseline="none")
