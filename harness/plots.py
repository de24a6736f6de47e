"""Report figures: matplotlib functions that take estimates and return a Figure (the caller saves it).

Figures are built with the object-oriented API on an Agg canvas, never through pyplot, so no global figure state is
created or leaked. An estimate may be a `harness.stats.Estimate` (or anything with `estimate`, `low`, `high`
attributes), a mapping with those keys, or a tuple `(estimate, low, high)`; a NaN bound draws no error bar.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

# Readable in a markdown report at ~800 px wide.
_RC = {
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.labelsize": 12,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_F = TypeVar("_F", bound=Callable[..., Figure])


def _styled(func: _F) -> _F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(_RC):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # text extents (label placement) need a renderer
    return fig


def as_triplet(value: Any) -> tuple[float, float, float]:
    """(estimate, low, high) from an Estimate-like object, a mapping, a 3-tuple or a bare number (no CI)."""
    if hasattr(value, "estimate"):
        return float(value.estimate), float(value.low), float(value.high)
    if isinstance(value, Mapping):
        return float(value["estimate"]), float(value["low"]), float(value["high"])
    if isinstance(value, int | float | np.floating | np.integer):
        return float(value), math.nan, math.nan
    est, low, high = value
    return float(est), float(low), float(high)


def _errors(triplets: Sequence[tuple[float, float, float]]) -> np.ndarray:
    """Asymmetric error-bar lengths (2, n); a missing bound draws nothing."""
    est, low, high = (np.array(col, dtype=float) for col in zip(*triplets, strict=True))
    # A percentile interval of a skewed statistic can exclude its own point estimate; draw that side as zero.
    return np.clip(np.nan_to_num(np.vstack([est - low, high - est]), nan=0.0), 0.0, None)


def _colors(n: int) -> list[Any]:
    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _is_nested(values: Mapping[str, Any]) -> bool:
    first = next(iter(values.values()), None)
    return isinstance(first, Mapping) and "estimate" not in first


def _set_category_ticks(ax: Any, positions: Sequence[float], labels: Sequence[str]) -> None:
    """Category labels on x, slanted when long so that ~6 of them do not collide."""
    slant = max((len(label) for label in labels), default=0) > 8
    ax.set_xticks(list(positions), list(labels), rotation=25 if slant else 0, ha="right" if slant else "center")
    if slant:
        for tick in ax.get_xticklabels():
            tick.set_rotation_mode("anchor")


@_styled
def accuracy_bars(
    values: Mapping[str, Any],
    *,
    title: str = "Accuracy by method",
    ylabel: str = "Accuracy",
    ylim: tuple[float, float] | None = (0.0, 1.0),
) -> Figure:
    """Bar chart of per-method estimates with CI error bars; `{method: {subset: est}}` groups bars by subset."""
    if not values:
        raise ValueError("values: nothing to plot")
    nested = _is_nested(values)
    per_method = values if nested else {name: {"": est} for name, est in values.items()}
    methods = list(per_method)
    subsets = list(dict.fromkeys(s for per in per_method.values() for s in per))
    width = 0.8 / len(methods)
    fig = _new_figure(max(6.0, 1.5 + 0.45 * len(methods) * len(subsets)), 4.5)
    ax = fig.add_subplot()
    for i, (method, color) in enumerate(zip(methods, _colors(len(methods)), strict=True)):
        per = [as_triplet(per_method[method].get(s, math.nan)) for s in subsets]
        centres = np.arange(len(subsets)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(centres, [t[0] for t in per], width * 0.9, label=method, color=color)
        ax.errorbar(centres, [t[0] for t in per], yerr=_errors(per), fmt="none", ecolor="black", capsize=3, lw=1)
    if nested:
        _set_category_ticks(ax, range(len(subsets)), subsets)
        ax.legend(title="Method", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    else:
        _set_category_ticks(ax, (np.arange(len(methods)) - (len(methods) - 1) / 2) * width, methods)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return fig


# Candidate label offsets (points) around a marker, tried in order: right, left, above, below, then diagonals.
_OFFSETS = [(8, 0, "left", "center"), (-8, 0, "right", "center"), (0, 9, "center", "bottom"),
            (0, -9, "center", "top"), (7, 7, "left", "bottom"), (-7, 7, "right", "bottom"),
            (7, -7, "left", "top"), (-7, -7, "right", "top")]  # fmt: skip


# A translucent white box keeps a label readable where it has to cross a grid or error-bar line.
_LABEL_BOX = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8}


def _overlap(box: Bbox, others: Sequence[Bbox]) -> float:
    total = 0.0
    for other in others:
        inter = Bbox.intersection(box, other)
        total += inter.width * inter.height if inter is not None else 0.0
    return total


def place_labels(
    ax: Any,
    xs: Sequence[float],
    ys: Sequence[float],
    labels: Sequence[str],
    *,
    obstacles: Sequence[Bbox] = (),
    colors: Sequence[Any] | None = None,
) -> list[Any]:
    """Annotate points so that labels avoid each other, the markers, `obstacles` and the axes edge.

    Greedy in display space: each label takes the first of eight offsets with the least weighted overlap.
    """
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    points = ax.transData.transform(np.column_stack([xs, ys]))
    markers = [Bbox.from_bounds(px - 5, py - 5, 10, 10) for px, py in points]
    placed: list[Bbox] = []
    texts = []
    for i, (x, y, label) in enumerate(zip(xs, ys, labels, strict=True)):
        text = ax.annotate(label, (x, y), xytext=(0, 0), textcoords="offset points", fontsize=10, bbox=_LABEL_BOX)
        text.set_color(colors[i] if colors else "black")
        costs, boxes = [], []
        for dx, dy, ha, va in _OFFSETS:
            text.set_position((dx, dy))
            text.set_horizontalalignment(ha)
            text.set_verticalalignment(va)
            box = text.get_window_extent(renderer)
            outside = box.width * box.height - _overlap(box, [frame])
            # Another label or leaving the axes is worst, a marker next, crossing an error bar is tolerable.
            costs.append(
                4 * _overlap(box, placed) + 4 * outside + 2 * _overlap(box, markers) + _overlap(box, obstacles)
            )
            boxes.append(box)
        best = int(np.argmin(costs))  # ties keep the preferred (earlier) offset
        dx, dy, ha, va = _OFFSETS[best]
        text.set_position((dx, dy))
        text.set_horizontalalignment(ha)
        text.set_verticalalignment(va)
        placed.append(boxes[best])
        texts.append(text)
    return texts


def _errorbar_boxes(ax: Any, xs: Sequence[tuple[float, ...]], ys: Sequence[tuple[float, ...]]) -> list[Bbox]:
    """Thin display-space boxes along each point's horizontal and vertical CI bars (label obstacles)."""
    boxes = []
    for (x, x_low, x_high), (y, y_low, y_high) in zip(xs, ys, strict=True):
        for start, end in (((x_low, y), (x_high, y)), ((x, y_low), (x, y_high))):
            if not any(math.isnan(v) for v in (*start, *end)):
                (x0, y0), (x1, y1) = ax.transData.transform([start, end])
                boxes.append(Bbox.from_extents(min(x0, x1) - 2, min(y0, y1) - 2, max(x0, x1) + 2, max(y0, y1) + 2))
    return boxes


def _matched(static: Mapping[str, Any], downstream: Mapping[str, Any]) -> list[str]:
    missing = set(static) ^ set(downstream)
    if missing:
        raise ValueError(f"static and downstream must name the same methods; unmatched: {sorted(missing)}")
    return list(static)


def _correlation_line(correlation: Any) -> str:
    names = {"spearman": "Spearman ρ", "kendall": "Kendall τ"}
    label = names.get(getattr(correlation, "method", ""), "rank correlation")
    est, low, high = as_triplet(correlation)
    ci = f" [{low:.2f}, {high:.2f}]" if not (math.isnan(low) or math.isnan(high)) else ""
    return f"{label} = {est:.2f}{ci}, n = {getattr(correlation, 'n', '?')}"


@_styled
def inversion_plot(
    static: Mapping[str, Any],
    downstream: Mapping[str, Any],
    *,
    correlation: Any = None,
    xlabel: str = "Static benchmark score",
    ylabel: str = "Downstream score",
    title: str = "Static benchmark vs downstream training",
) -> Figure:
    """One labelled point per method at (static, downstream) with CI error bars on both axes and the rank correlation.

    `correlation` is a `harness.stats.RankCorrelation` (or any estimate-like value); it is printed under the title.
    """
    methods = _matched(static, downstream)
    if not methods:
        raise ValueError("static: nothing to plot")
    xs = [as_triplet(static[m]) for m in methods]
    ys = [as_triplet(downstream[m]) for m in methods]
    fig = _new_figure(6.5, 5.0)
    ax = fig.add_subplot()
    colors = _colors(len(methods))
    for i, color in enumerate(colors):
        ax.errorbar(
            xs[i][0],
            ys[i][0],
            xerr=_errors([xs[i]]),
            yerr=_errors([ys[i]]),
            fmt="o",
            color=color,
            ms=7,
            capsize=3,
            lw=1.2,
        )
    ax.margins(0.18)  # room for labels at the edges
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title if correlation is None else f"{title}\n{_correlation_line(correlation)}")
    ax.grid(alpha=0.3)
    fig.canvas.draw()  # fixes the layout so that label extents are final
    obstacles = _errorbar_boxes(ax, xs, ys)
    place_labels(ax, [x[0] for x in xs], [y[0] for y in ys], methods, obstacles=obstacles, colors=colors)
    return fig


def _curve(value: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    if isinstance(value, tuple | list) and len(value) in (2, 4) and np.ndim(value[0]) == 1:
        parts = [np.asarray(v, dtype=float) for v in value]
        return parts[0], parts[1], *(parts[2:] if len(parts) == 4 else (None, None))
    ys = np.asarray(value, dtype=float)
    return np.arange(ys.size, dtype=float), ys, None, None


def _draw_curves(ax: Any, series: Mapping[str, Any], colors: Sequence[Any], style: str) -> list[Any]:
    lines = []
    for (name, value), color in zip(series.items(), colors, strict=True):
        steps, ys, low, high = _curve(value)
        if steps.shape != ys.shape:
            raise ValueError(f"series[{name!r}]: {steps.size} steps but {ys.size} values")
        marker = "o" if ys.size <= 30 else None
        (line,) = ax.plot(steps, ys, style, color=color, marker=marker, ms=4, lw=1.8, label=name)
        if low is not None and high is not None:
            ax.fill_between(steps, low, high, color=color, alpha=0.15, lw=0)
        lines.append(line)
    return lines


@_styled
def step_curves(
    series: Mapping[str, Any],
    *,
    right: Mapping[str, Any] | None = None,
    xlabel: str = "Training step",
    ylabel: str = "Value",
    right_ylabel: str = "Value",
    title: str = "Training curves",
) -> Figure:
    """Line plot of per-step series; `right` series (dashed) get their own y axis, e.g. gold metric vs proxy reward.

    A series is a 1-D array (steps 0..n-1), a tuple `(steps, values)`, or `(steps, values, low, high)` for a band.
    """
    if not series:
        raise ValueError("series: nothing to plot")
    right = right or {}
    colors = _colors(len(series) + len(right))
    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    lines = _draw_curves(ax, series, colors[: len(series)], "-")
    if right:
        twin = ax.twinx()
        twin.spines["right"].set_visible(True)
        lines += _draw_curves(twin, right, colors[len(series) :], "--")
        twin.set_ylabel(right_ylabel)
    ax.legend(lines, [line.get_label() for line in lines], loc="best", frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


@_styled
def ablation_bars(
    values: Mapping[str, Any],
    *,
    baseline: str | None = None,
    title: str = "Ablation",
    xlabel: str = "Score",
) -> Figure:
    """Horizontal bars (one per variant, in the given order) with CI error bars; the baseline is a dashed line."""
    if not values:
        raise ValueError("values: nothing to plot")
    if baseline is not None and baseline not in values:
        raise ValueError(f"baseline: {baseline!r} is not one of the variants {list(values)}")
    names = list(values)
    triplets = [as_triplet(values[n]) for n in names]
    fig = _new_figure(7.0, 1.2 + 0.5 * len(names))
    ax = fig.add_subplot()
    colors = ["#4c72b0" if n != baseline else "#dd8452" for n in names]
    ypos = np.arange(len(names))[::-1]  # first variant on top
    ax.barh(ypos, [t[0] for t in triplets], 0.7, color=colors)
    ax.errorbar([t[0] for t in triplets], ypos, xerr=_errors(triplets), fmt="none", ecolor="black", capsize=3, lw=1)
    if baseline is not None:
        # Named on its tick rather than in a legend, which would sit on a bar or collide with the title.
        ax.axvline(as_triplet(values[baseline])[0], color="#dd8452", ls="--", lw=1.2)
    ax.set_yticks(ypos, [f"{n} (baseline)" if n == baseline else n for n in names])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return fig
