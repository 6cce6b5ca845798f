"""What a sweep's fine-tunes bought, per hook: at matched L0, the CE-loss increase of the parents'
mode (local), of each fine-tune (``local -> e2e, 5%``) and of full training in the fine-tune's mode
(e2e), the share of the parent-to-full gap each fine-tune closes, and what each cost in samples and
wall time, parent included. Karvonen (2025) reports 20-50% of the CE-loss gap closed for 5% more
samples; this table is that measurement on the sweep's own models. A grouped Tune trial's members
share one trial time; each is given its group's time divided by its members (:data:`GROUPED_TIME_RULE`).

Frontiers are read at the L0 of each point of the parents', the fine-tunes' and the full modes'
frontiers that lies where the parents' and the full mode's frontiers overlap in L0 (where the gap is
defined), by linear interpolation in (log L0, CE-loss increase) between a frontier's neighbouring
points; a level outside a frontier's L0 range is not read (None).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from sweeps.frontier import FrontPoint, ce_at_l0
from sweeps.planning.trial import Trial

# How a grouped member's trial time is counted (sweeps.reporting.results gives each member its share).
GROUPED_TIME_RULE = "its group's time divided by the group's members (they train together)"


def _mean(values: list[Any]) -> float | None:
    finite = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return statistics.fmean(finite) if finite else None


def finetune_comparison(fronts: dict[str, dict[str, list[FrontPoint]]], in_hook: list[Trial]) -> dict[str, Any] | None:
    """The table's document (pareto.json's ``finetune`` of a hook), or None without fine-tunes, or
    without a frontier of their parents' mode."""
    info = {t.series: t.finetune for t in in_hook if t.finetune is not None and t.series in fronts}
    if not info:
        return None
    by_name = {t.name: t for t in in_hook}
    series: dict[str, Any] = {}
    for s, ft in sorted(info.items(), key=lambda kv: list(fronts).index(kv[0])):
        assert ft is not None
        mine = [t for t in in_hook if t.series == s]
        parents = [by_name.get(t.finetune["parent"]) for t in mine if t.finetune]
        series[s] = {
            "parent_mode": ft["parent_mode"],
            "mode": next(t.mode for t in mine),
            "fraction": ft["fraction"],
            "samples": _mean([(t.metrics.get("parent_n_samples") or 0) + (t.n_samples or 0) for t in mine]),
            "wall_s": _mean(
                [
                    (t.wall_s if t.wall_s is not None else math.nan)
                    + (p.wall_s if p is not None and p.wall_s is not None else math.nan)
                    for t, p in zip(mine, parents, strict=True)
                ]
            ),
        }
    full = {
        m: {
            "samples": _mean([t.n_samples for t in in_hook if t.series == m]),
            "wall_s": _mean([t.wall_s for t in in_hook if t.series == m]),
        }
        for m in fronts
        if m not in series
    }
    levels = []
    for parent_mode in sorted({v["parent_mode"] for v in series.values()}):
        for l0 in _levels(
            fronts, parent_mode, [s for s, v in series.items() if v["parent_mode"] == parent_mode], series
        ):
            ce = {m: ce_at_l0(fronts[m]["l0"], l0) for m in fronts}
            gap = {}
            for s, v in series.items():
                start, goal, got = ce.get(v["parent_mode"]), ce.get(v["mode"]), ce.get(s)
                if v["parent_mode"] == parent_mode and None not in (start, goal, got) and start != goal:
                    gap[s] = (start - got) / (start - goal)  # type: ignore[operator]
            levels.append({"l0": l0, "parent_mode": parent_mode, "ce_loss_increase": ce, "gap_closed": gap})
    return {"series": series, "full": full, "levels": levels}


def _levels(fronts: dict[str, dict[str, list[FrontPoint]]], parent_mode: str, mine: list[str], series) -> list[float]:
    """The L0 of every point of the parents', the fine-tunes' and their full modes' frontiers that lies
    where the parents' and some full mode's frontiers overlap (where a gap is defined)."""
    xs = {m: [p.x for p in fronts.get(m, {}).get("l0", []) if p.x > 0] for m in fronts}
    ranges = []
    for goal in {series[s]["mode"] for s in mine}:
        if xs.get(parent_mode) and xs.get(goal):
            ranges.append((max(min(xs[parent_mode]), min(xs[goal])), min(max(xs[parent_mode]), max(xs[goal]))))
    points = {x for m in [parent_mode, *mine, *{series[s]["mode"] for s in mine}] for x in xs.get(m, [])}
    return sorted(x for x in points if any(lo <= x <= hi for lo, hi in ranges))


def finetune_lines(doc: dict[str, Any] | None) -> list[str]:
    """The table and a sentence per fine-tune, as markdown."""
    if not doc:
        return []
    series, levels = doc["series"], doc["levels"]
    cols = [*doc["full"], *series]  # every mode trained from scratch, for reference, then the fine-tunes
    lines = [
        "### Fine-tunes at matched L0",
        "",
        "CE-loss increase read off each frontier at the L0 of the frontiers' points where the parents' and the "
        "full mode's frontiers overlap (log-L0 interpolation, no extrapolation); in brackets the share of the gap "
        "between the parents' mode and full training in the fine-tune's mode that the fine-tune closes. "
        "Trial time is Tune's time_total_s (a fine-tune's: its parent's included); a member of a grouped Tune "
        f"trial is given {GROUPED_TIME_RULE}.",
        "",
        "| L0 | " + " | ".join(cols) + " |",
        "| --- " * (1 + len(cols)) + "|",
    ]
    for row in levels:
        cells = []
        for c in cols:
            v = row["ce_loss_increase"].get(c)
            g = row["gap_closed"].get(c)
            cells.append("-" if v is None else f"{v:.4g}" + (f" ({g:.0%})" if g is not None else ""))
        lines.append(f"| {row['l0']:.4g} | " + " | ".join(cells) + " |")
    lines.append("")
    for s, v in series.items():
        gaps = [row["gap_closed"][s] for row in levels if s in row["gap_closed"]]
        full = doc["full"].get(v["mode"], {})
        cost = f"{_num(v['samples'])} samples in all, parent included"
        if v["wall_s"] is not None:
            cost += f", {v['wall_s']:.0f} s of trial time"
        if full.get("samples") is not None:
            cost += f" (full {v['mode']}: {_num(full['samples'])} samples"
            cost += f", {full['wall_s']:.0f} s)" if full.get("wall_s") is not None else ")"
        if gaps:
            mean = statistics.fmean(gaps)
            verdict = (
                f"closes {mean:.0%} of the {v['parent_mode']}-to-{v['mode']} gap on average over {len(gaps)} "
                f"L0 levels ({min(gaps):.0%} to {max(gaps):.0%}), "
                f"{mean / (v['fraction'] * 100):.1%} per 1% extra samples"
            )
        else:
            verdict = "is not read at any L0 level (its frontier and the full modes' do not overlap in L0)"
        lines.append(f"- {s}: {verdict}; {cost}.")
    return [*lines, ""]


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"
