"""Architectures compared with each other at matched CE-loss increase, per hook and mode: the L0 each
architecture's frontier needs at the levels the sweep asked for (``report.match_at``, a target search's
CE targets) and across the CE range where both frontiers reach, as a ratio to the reference architecture
(the first in e2e_sae's order: relu). The report's other tables compare modes within an architecture;
this one is where "BatchTopK needs 3-4x fewer active elements than relu" can be read.

Frontiers are read as everywhere in the report (sweeps.frontier.read_inside: log-L0
interpolation between neighbouring frontier points, nothing outside a frontier's CE range).
"""

from __future__ import annotations

from typing import Any

from sweeps.frontier import FrontPoint, overlap_levels, read_inside
from sweeps.reporting.views import Y_METRIC
from sweeps.reporting.views import fmt as _fmt

N_OVERLAP_LEVELS = 7


def _front(points: list[dict[str, Any]]) -> list[FrontPoint]:
    """A pareto.json frontier (entries x ascending) as FrontPoints in (l0, ce_loss_increase)."""
    return [FrontPoint(p["metrics"]["l0"], p["metrics"][Y_METRIC], p["trial_id"]) for p in points]


def architecture_comparison(by_arch: dict[str, dict[str, Any]], levels: list[float]) -> dict[str, Any] | None:
    """pareto.json's ``architecture_comparison`` of a hook from its per-architecture entries
    (``{arch: {"modes": ...}}``, the reference first), or None with fewer than two architectures."""
    if len(by_arch) < 2:
        return None
    reference, *others = by_arch
    modes_out: dict[str, Any] = {}
    modes = [m for m in by_arch[reference]["modes"] if any(m in by_arch[a]["modes"] for a in others)]
    for mode in modes:
        fronts = {a: _front(e["modes"][mode]["frontiers"]["l0"]) for a, e in by_arch.items() if mode in e["modes"]}
        rows = []
        for level in levels:
            l0 = {a: read_inside(f, level) for a, f in fronts.items()}
            rows.append({Y_METRIC: level, "l0": l0, "ratios": _ratios(l0, reference)})
        curve = {}
        for a in [a for a in fronts if a != reference]:
            readings = [
                (y, read_inside(fronts[a], y), read_inside(fronts[reference], y))
                for y in overlap_levels([fronts[a], fronts[reference]], N_OVERLAP_LEVELS)
            ]
            curve[f"{a}/{reference}"] = [{Y_METRIC: y, "ratio": x / r} for y, x, r in readings if x is not None and r]
        modes_out[mode] = {"levels": rows, "l0_ratio_curve": curve}
    return {"reference": reference, "modes": modes_out}


def _ratios(l0: dict[str, float | None], reference: str) -> dict[str, float | None]:
    ref = l0.get(reference)
    return {f"{a}/{reference}": (v / ref if v is not None and ref else None) for a, v in l0.items() if a != reference}


def architecture_lines(comparison: dict[str, Any] | None) -> list[str]:
    """report.md: one table per hook (a row per mode and requested level, then the range of the ratio
    across the overlap) and a sentence per mode and architecture."""
    if not comparison or not comparison["modes"]:
        return []
    ref = comparison["reference"]
    archs = [ref, *{a.split("/")[0]: None for m in comparison["modes"].values() for a in m["l0_ratio_curve"]}]
    names = [f"{a}/{ref}" for a in archs[1:]]
    lines = [
        f"### Architectures compared at matched CE-loss increase (L0 ratio to {ref})",
        "",
        "| mode | CE-loss increase | " + " | ".join(f"{a} L0" for a in archs) + " | " + " | ".join(names) + " |",
        "| --- " * (2 + len(archs) + len(names)) + "|",
    ]
    sentences = []
    for mode, m in comparison["modes"].items():
        for row in m["levels"]:
            cells = [_fmt(row["l0"].get(a)) if row["l0"].get(a) is not None else "out of range" for a in archs]
            cells += [_fmt(row["ratios"].get(n), 3) for n in names]
            lines.append(f"| {mode} | {_fmt(row[Y_METRIC], 3)} | " + " | ".join(cells) + " |")
        spans = [_span(m["l0_ratio_curve"].get(n, [])) for n in names]
        levels: list[dict[str, Any]] = next((c for c in m["l0_ratio_curve"].values() if c), [])
        where = f"across the overlap {_span(levels, Y_METRIC)}" if levels else "across the overlap: none"
        lines.append(f"| {mode} | {where} | " + " | ".join("" for _ in archs) + " | " + " | ".join(spans) + " |")
        for n, c in m["l0_ratio_curve"].items():
            if c:
                sentences.append(
                    f"{mode}: {n.split('/')[0]} needs {_span(c)} times {ref}'s L0 across the CE-loss increases "
                    f"where both frontiers reach ({_span(c, Y_METRIC)})."
                )
    lines += [
        "",
        '"out of range": that architecture\'s frontier does not span the level (no extrapolation).',
        "",
    ]
    return lines + [f"{s}  " for s in sentences] + [""]


def _span(points: list[dict[str, Any]], key: str = "ratio") -> str:
    """``0.22-0.31``: the min-max of ``key`` over ``points`` (``–`` when there are none)."""
    values = [p[key] for p in points]
    if not values:
        return "–"
    lo, hi = min(values), max(values)
    return _fmt(lo, 3) if _fmt(lo, 3) == _fmt(hi, 3) else f"{_fmt(lo, 3)}-{_fmt(hi, 3)}"
