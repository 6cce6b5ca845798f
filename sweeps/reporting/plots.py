"""The report's figures, from pareto.json's document (and the trials, for the faint points and each
seed's frontier): per hook the frontiers (the paper's Figure 1 layout), the L0 ratio to local across the
overlap, and with several architectures their L0 ratio at matched CE-loss increase.

Read at a glance: one colour per series in every figure (views.series_colours), the log L0 axis labelled
with plain numbers at 1-2-5 steps, counts with integer ticks, and a legend entry for everything drawn.
Matplotlib's object API only (``Figure``, never pyplot): writing a report changes no global backend.
Each ``*_figure`` function builds the figure without writing it, so tests can read its axes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from e2e_sae.hooks import hook_slug
from sweeps.frontier import pareto_front
from sweeps.planning.trial import Trial
from sweeps.reporting.views import (
    LOG_X,
    X_METRICS,
    Y_METRIC,
    fmt,
    hook_views,
    requested_levels,
    series_colours,
    series_label,
    settings_line,
)

LINE_STYLES = ("-", "--", ":", "-.")  # one per architecture (frontiers) or per hook (ratio figures)
MARKERS = ("o", "s", "^", "D")
CROSSES = ("x", "+", "1", "2")  # where the matched comparison reads a frontier, one marker per architecture
NICE_STEPS = (1, 2, 5)


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def plain_number(v: float) -> str:
    """A tick label as the paper writes it: 60, 100, 2,000, 0.5 (never 6x10^1)."""
    if v >= 1:
        return f"{v:,.0f}" if v >= 10_000 else f"{v:.0f}"
    return f"{v:.3g}"


def nice_values(lo: float, hi: float, steps: tuple[int, ...] = NICE_STEPS) -> list[float]:
    """Every value ``s * 10**n`` (s in ``steps``) within [lo, hi], ascending; lo > 0."""
    out = []
    for n in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        out += [s * 10.0**n for s in steps if lo * (1 - 1e-9) <= s * 10.0**n <= hi * (1 + 1e-9)]
    return out


def set_plain_log_ticks(ax, values: list[float]) -> None:
    """A log x axis labelled with plain numbers at 1-2-5 steps (only 1 x 10^n beyond 2.5 decades, so
    labels never overlap), widened to the nearest 1-2-5 values around ``values`` when fewer than two
    would show: a point's L0 can always be read between two labelled ticks."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if not positive:
        return
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    if len(nice_values(lo, hi)) < 2:
        below = max(nice_values(min(positive) / 10, min(positive)))
        above = min(nice_values(max(positive), max(positive) * 10))
        lo, hi = min(lo, below / 1.05), max(hi, above * 1.05)
        ax.set_xlim(lo, hi)
    steps = NICE_STEPS if math.log10(hi / lo) <= 2.5 else (1,)
    ax.xaxis.set_major_locator(FixedLocator(nice_values(lo, hi, steps)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: plain_number(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def set_integer_ticks(ax) -> None:
    """A count axis (alive elements): integer ticks, written in full (1023, 1024; no offset)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: plain_number(v)))


def frontier_figure(doc: dict[str, Any], trials: list[Trial], hook: str):
    """One hook's frontiers: CE-loss increase against L0 (log x) and, unless every element is alive in
    every trial, against alive elements; y shared. Legend below the panels."""
    from matplotlib.figure import Figure

    h = doc["hooks"][hook]
    x_metrics = [x for x in X_METRICS if not (x == "alive_dict_elements" and h.get("all_alive"))]
    fig = Figure(figsize=(5.5 * len(x_metrics) + 0.5, 5.2), layout="constrained")
    axes = fig.subplots(1, len(x_metrics), sharey=True, squeeze=False)[0]
    views = hook_views(h)
    colours = series_colours(doc)
    for ax, x_metric in zip(axes, x_metrics, strict=True):
        xs: list[float] = []
        for j, (arch, view) in enumerate(views):
            xs += _draw_modes(ax, view, trials, hook, (arch, j), x_metric, colours)
            _label_crosses(ax, arch, view, x_metric)
        matched = views[0][1]["matched"][Y_METRIC] if len(views) == 1 else None
        if matched is not None:
            ax.axhline(matched, color="grey", ls=":", lw=1.2, label=f"matched level {fmt(matched, 3)}")
        _mark_levels(ax, doc, x_metric)
        if LOG_X[x_metric]:
            set_plain_log_ticks(ax, xs)
        else:
            set_integer_ticks(ax)
        ax.set_xlabel("L0 (log scale)" if x_metric == "l0" else "alive dictionary elements")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("CE loss increase")
    _legend(fig, axes[0], _several_seeds(trials, hook), views, panels=len(x_metrics))
    fig.suptitle(
        f"{doc['sweep']}: {hook}. Original model CE loss {fmt(h['ce_loss_original'], 5)}\n({settings_line(doc)})",
        fontsize=10,
    )
    return fig


def _several_seeds(trials: list[Trial], hook: str) -> bool:
    return len({t.seed for t in trials if t.state == "finished" and t.hook == hook and t.seed is not None}) > 1


def _legend(fig, ax, several_seeds: bool, views: list[tuple[str | None, dict[str, Any]]], panels: int = 2) -> None:
    """The series and lines drawn (their labels), then what the marks mean: faint points, thin per-seed
    lines, the crosses (one marker per architecture, each at its own matched level)."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    marks = [(Line2D([], [], ls="", marker="o", color="grey", alpha=0.3, ms=5), "faint dot: a finished trial")]
    for j, (arch, view) in enumerate(views):
        level = view["matched"][Y_METRIC]
        if level is not None:
            where = "the matched level" if arch is None else f"{arch}'s matched level {fmt(level, 3)}"
            marks.append((Line2D([], [], ls="", marker=CROSSES[j % 4], color="grey", ms=8, mew=2), f"read at {where}"))
    if several_seeds:
        marks.insert(1, (Line2D([], [], color="grey", lw=0.8, alpha=0.5), "thin line: one seed's own frontier"))
    handles += [m[0] for m in marks]
    labels += [m[1] for m in marks]
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=min(2 * panels, len(handles)),  # two columns a panel: a one-panel figure's legend fits its width
        fontsize=8,
        frameon=False,
        handlelength=3.5,
    )


def _draw_modes(ax, view, trials, hook, arch_index, x_metric, colours) -> list[float]:
    """One architecture's modes on one panel (its line style and cross marker): finished trials faint,
    each frontier as connected points, each seed's frontier thin and light, and where the matched
    comparison reads it. Returns the x values drawn."""
    arch, j = arch_index
    style = LINE_STYLES[j % 4]
    xs = []
    for mode, m in view["modes"].items():
        c = colours[mode]
        mine = [t for t in trials if t.state == "finished" and t.hook == hook and t.series == mode]
        mine = [t for t in mine if arch is None or t.architecture == arch]
        pts = [(_num(t.metrics.get(x_metric)), _num(t.metrics.get(Y_METRIC))) for t in mine]
        pts = [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
        xs += [x for x, _ in pts]
        if pts:
            ax.scatter(*zip(*pts, strict=True), color=c, alpha=0.3, s=18, linewidths=0)
        front = m["frontiers"][x_metric]
        xy = ([p["metrics"][x_metric] for p in front], [p["metrics"][Y_METRIC] for p in front])
        ax.plot(*xy, "o" + style, color=c, ms=4, label=series_label(mode, arch))
        seeds = sorted({t.seed for t in mine if t.seed is not None})
        for seed in seeds if len(seeds) > 1 else []:
            own = pareto_front(
                [(_num(t.metrics.get(x_metric)), _num(t.metrics.get(Y_METRIC))) for t in mine if t.seed == seed]
            )
            ax.plot([p.x for p in own], [p.y for p in own], style, color=c, lw=0.8, alpha=0.4)
        read = view["matched"]["modes"].get(mode, {}).get(x_metric)
        if read:
            ax.plot(read["value"], view["matched"][Y_METRIC], CROSSES[j % 4], color=c, ms=8, mew=2)
    return xs


def _label_crosses(ax, arch: str | None, view: dict[str, Any], x_metric: str) -> None:
    """Beside other architectures, an architecture's name left of its leftmost cross (its matched level)."""
    reads = [m[x_metric]["value"] for m in view["matched"]["modes"].values() if x_metric in m]
    if arch is None or not reads:
        return
    box = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "grey", "lw": 0.5}
    xy = (min(reads), view["matched"][Y_METRIC])
    ax.annotate(arch, xy, xytext=(-8, 0), textcoords="offset points", ha="right", va="center", fontsize=8, bbox=box)


def _mark_levels(ax, doc: dict[str, Any], x_metric: str) -> None:
    """The levels the sweep asked for: a target search's targets (dashed black; L0 ones vertical on the
    L0 panel) and ``report.match_at`` levels that are not targets (dash-dot), values in the legend."""
    targets = doc.get("search_targets", {})
    ce_targets = targets.get(Y_METRIC, [])
    for i, y in enumerate(ce_targets):
        label = f"search target{'s' if len(ce_targets) > 1 else ''} {', '.join(fmt(v, 3) for v in ce_targets)}"
        ax.axhline(y, color="black", ls="--", lw=0.8, alpha=0.6, label=label if i == 0 else None)
    asked = [y for y in requested_levels(doc) if y not in ce_targets]
    for i, y in enumerate(asked):
        label = f"report.match_at {', '.join(fmt(v, 3) for v in asked)}"
        ax.axhline(y, color="black", ls="-.", lw=0.8, alpha=0.6, label=label if i == 0 else None)
    if x_metric == "l0":
        l0_targets = targets.get("l0", [])
        for i, x in enumerate(l0_targets):
            label = f"L0 target{'s' if len(l0_targets) > 1 else ''} {', '.join(fmt(v, 3) for v in l0_targets)}"
            ax.axvline(x, color="black", ls="--", lw=0.8, alpha=0.6, label=label if i == 0 else None)


def plot_frontiers(doc: dict[str, Any], trials: list[Trial], out_dir: Path) -> list[Path]:
    """``frontier_<hook>.png`` (120 dpi) and ``.svg`` per hook; returns the PNGs in hook order."""
    pngs = []
    for hook in doc["hooks"]:
        fig = frontier_figure(doc, trials, hook)
        png = out_dir / f"frontier_{hook_slug(hook)}.png"
        fig.savefig(png, dpi=120)
        fig.savefig(png.with_suffix(".svg"), metadata={"Date": None})
        pngs.append(png)
    return pngs


def ratio_figure(doc: dict[str, Any]):
    """Per hook and non-local series, L0 / local L0 across the CE range where both frontiers overlap (1:
    no better than local), in the series' colour, one line style and marker per hook; with seeds, the
    per-seed ratios' min-max as a band of the same colour. None when no curve has a point."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colours = series_colours(doc)
    sets = [(hook, arch) for hook, h in doc["hooks"].items() for arch, _ in hook_views(h)]  # a style each
    curves = [
        (hook, name, arch, c, (view.get("seed_spread") or {}).get("l0_ratio_curve", {}).get(name))
        for hook, h in doc["hooks"].items()
        for arch, view in hook_views(h)
        for name, c in view.get("l0_ratio_curve", {}).items()
        if c
    ]
    if not curves:
        return None
    fig = Figure(figsize=(7, 4.6), layout="constrained")
    ax = fig.subplots()
    banded = False
    for hook, name, arch, c, by_seed in curves:
        colour, j = colours[name.removesuffix("/local")], sets.index((hook, arch)) % 4
        label = f"{name if arch is None else f'{name} ({arch})'} at {hook}"
        ax.plot([p[Y_METRIC] for p in c], [p["ratio"] for p in c], LINE_STYLES[j], marker=MARKERS[j], ms=4,
                color=colour, label=label)  # fmt: skip
        band = [(p[Y_METRIC], sp["min"], sp["max"]) for p, sp in zip(c, by_seed or [], strict=False) if sp["n"] >= 2]
        if band:
            xs, lo, hi = zip(*band, strict=True)
            ax.fill_between(xs, lo, hi, color=colour, alpha=0.15, lw=0)
            banded = True
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    handles, labels = ax.get_legend_handles_labels()
    if banded:
        handles.append(Patch(color="grey", alpha=0.25, lw=0))
        labels.append("band: min-max of the ratio read off each seed's own frontiers")
    ax.set_xlabel("CE loss increase")
    ax.set_ylabel("L0 / local L0 (1: no fewer than local)")
    ax.grid(alpha=0.3)
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=7, frameon=False)
    title = "L0 ratio to local at matched CE-loss increase, where the frontiers overlap"
    if banded:
        title += (
            "\nLine: read off the pooled frontiers (every seed's trials); their lower envelope can beat "
            "each seed's,\nso the line may leave its band: the band tells a mode difference from seed noise."
        )
    ax.set_title(title, fontsize=8)
    return fig


def plot_l0_ratios(doc: dict[str, Any], out_dir: Path) -> Path | None:
    """``l0_ratio.png`` (:func:`ratio_figure`), or None when there is no curve."""
    return _save(ratio_figure(doc), out_dir / "l0_ratio.png")


def _save(fig, png: Path) -> Path | None:
    """``fig`` written to ``png`` (None: no figure, nothing written)."""
    if fig is None:
        return None
    fig.savefig(png, dpi=120)
    return png


def architecture_figure(doc: dict[str, Any]):
    """Per hook and mode, an architecture's L0 / the reference architecture's L0 across the CE range where
    both frontiers reach (sweeps.reporting.architecture_table), in the mode's colour, one line style and
    marker per hook. None without an architecture comparison."""
    from matplotlib.figure import Figure

    colours = series_colours(doc)
    curves = [
        (j, hook, mode, name, c)
        for j, (hook, h) in enumerate(doc["hooks"].items())
        for mode, m in (h.get("architecture_comparison") or {}).get("modes", {}).items()
        for name, c in m["l0_ratio_curve"].items()
        if c
    ]
    if not curves:
        return None
    fig = Figure(figsize=(7, 4.4), layout="constrained")
    ax = fig.subplots()
    for j, hook, mode, name, c in curves:
        ax.plot([p[Y_METRIC] for p in c], [p["ratio"] for p in c], LINE_STYLES[j % 4], marker=MARKERS[j % 4], ms=4,
                color=colours[mode], label=f"{mode}: {name} at {hook}")  # fmt: skip
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.set_xlabel("CE loss increase")
    ax.set_ylabel("L0 ratio between architectures (same mode)")
    ax.set_title("Architectures at matched CE-loss increase, where their frontiers overlap", fontsize=9)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize=7, frameon=False)
    return fig


def plot_architectures(doc: dict[str, Any], out_dir: Path) -> Path | None:
    """``architectures.png`` (:func:`architecture_figure`), or None with one architecture."""
    return _save(architecture_figure(doc), out_dir / "architectures.png")
