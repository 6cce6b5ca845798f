"""Sweep report: experiment directory -> trials.csv, pareto.json, frontier plots, report.md.

Reads only the experiment directory (``sweep.yaml`` and the trial dirs' ``params.json``,
``result.json`` and ``error.txt``), so it works on a sweep another machine ran, one still running,
or one that partly failed. Only finished trials enter the frontiers; the others are listed as
missing. The file layout and the pareto.json schema are documented in docs/report.md.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import statistics
import warnings
from pathlib import Path
from typing import Any

from e2e_sae.architectures.spec import ARCHITECTURES
from e2e_sae.metric_names import EVAL_CONTEXT, EVAL_METRICS, PROGRESS
from e2e_sae.modes import in_mode_order
from sweeps.experiment import ANALYSIS_DIR, ANALYSIS_GEOMETRY_MD, REPORT_DIR
from sweeps.frontier import (
    DEGENERATE_CE_SCORE,
    FrontPoint,
    degenerate_reason,
    drawn_front,
    interpolate_at,
    matched_target,
    overlap_levels,
    ratio_bound,
)
from sweeps.frontier import read_inside as _read_inside
from sweeps.planning.trial import STATES, Trial
from sweeps.reporting.architecture_table import architecture_comparison, architecture_lines
from sweeps.reporting.finetune_table import finetune_comparison, finetune_lines
from sweeps.reporting.plots import plot_architectures, plot_frontiers, plot_l0_ratios
from sweeps.reporting.results import TUNE_KEYS, load_trials, read_sweep_meta
from sweeps.reporting.views import LOG_X, X_METRICS, Y_METRIC, hook_views, requested_levels, settings_line
from sweeps.reporting.views import fmt as _fmt

SCHEMA_VERSION = 2  # 2: degenerate_groups renamed modes_without_frontier
PARAM_COLUMNS = (
    "trial_id",
    "state",
    "mode",
    "hook",
    "layer",
    "dict_size_to_input_ratio",
    "n_dict_elements",
    "architecture",
    "sparsity_coeff",
    "k",
    "seed",
    "n_samples",
)
METRIC_COLUMNS = (*EVAL_METRICS, *EVAL_CONTEXT, *PROGRESS)
MATCHED_RULE = (
    "Per hook, the target CE-loss increase is the largest of the frontiers' minimal CE-loss "
    "increases (over every mode and both x metrics): the lowest level all frontiers reach. Each "
    "frontier is read at that level by linear interpolation between its two neighbouring points, "
    "in (ce_loss_increase, log l0) for l0 and (ce_loss_increase, alive_dict_elements) for alive "
    "elements; a frontier whose sparsest point already lies below the target reports that point's "
    "x, marked clipped (an upper bound)."
)


# ---------------------------------------------------------------- frontiers and matched comparison


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def _clean(v: Any) -> Any:
    """JSON-safe: non-finite floats become null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _metrics(t: Trial) -> dict[str, Any]:
    return {
        k: _clean(v)
        for k, v in t.metrics.items()
        if k not in TUNE_KEYS and (v is None or isinstance(v, (int, float, str, bool)))
    }


def _front_entry(p: FrontPoint) -> dict[str, Any]:
    t: Trial = p.payload
    return {
        "trial_id": t.trial_id,
        "architecture": t.architecture,
        "sparsity_coeff": t.sparsity_coeff,
        "k": t.k,
        "target_l0": t.target_l0,
        "dict_size_to_input_ratio": t.dict_size_to_input_ratio,
        "seed": t.seed,
        "n_samples": t.n_samples,
        "metrics": _metrics(t),
    }


def _neighbour(p: FrontPoint, x_metric: str) -> dict[str, Any]:
    return {"trial_id": p.payload.trial_id, x_metric: p.x, Y_METRIC: p.y}


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    return a["value"] / b["value"] if a and b and b["value"] else None


def _ratios(mode: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    """``<mode>/local`` per x metric, and in ``bounds`` which of them are bounds, not estimates
    (sweeps.frontier.ratio_bound): a clipped reading makes the ratio one."""
    out: dict[str, Any] = {x: _ratio(mode.get(x), local.get(x)) for x in X_METRICS}
    out["bounds"] = {
        x: ratio_bound(mode[x]["clipped"], local[x]["clipped"]) if out[x] is not None else None for x in X_METRICS
    }
    return out


def _matched(fronts: dict[str, dict[str, list[FrontPoint]]]) -> dict[str, Any]:
    target = matched_target(f for by_x in fronts.values() for f in by_x.values())
    modes_out: dict[str, Any] = {}
    for mode, by_x in fronts.items():
        for x_metric, front in by_x.items():
            if target is None or not front:
                continue
            r = interpolate_at(front, target, log_x=LOG_X[x_metric])
            modes_out.setdefault(mode, {})[x_metric] = {
                "value": r.x,
                "clipped": r.clipped,
                "interpolation": "log" if LOG_X[x_metric] else "linear",
                "lower_x_trial": _neighbour(r.lower_x, x_metric),
                "higher_x_trial": _neighbour(r.higher_x, x_metric),
            }
    ratios = {f"{m}/local": _ratios(modes_out[m], modes_out.get("local", {})) for m in modes_out if m != "local"}
    return {Y_METRIC: target, "modes": modes_out, "ratios": ratios}


DEGENERATE_FIX = (
    "lower the sparsity coefficient for this mode and hook (a target search with "
    "search.targets does it: docs/report.md)"
)


def _matched_at_levels(fronts: dict[str, dict[str, list[FrontPoint]]], levels: list[float]) -> list[dict[str, Any]]:
    """Matched comparisons at the CE-loss increases the sweep asked for (``report.match_at``, a target
    search's CE targets: views.requested_levels): per mode the L0 read off its frontier, None where the
    level lies outside that frontier's CE range (no extrapolation, no clipping), and the ratios to local."""
    out = []
    for level in levels:
        l0 = {mode: _read_inside(by_x.get("l0", []), level) for mode, by_x in fronts.items()}
        local = l0.get("local")
        ratios = {f"{m}/local": (v / local if v is not None and local else None) for m, v in l0.items() if m != "local"}
        out.append({Y_METRIC: level, "l0": l0, "ratios": ratios})
    return out


def _l0_ratio_curve(fronts: dict[str, dict[str, list[FrontPoint]]], n: int = 7) -> dict[str, Any]:
    """Per non-local mode, its L0 / local's L0 at ``n`` CE-loss increase levels evenly spread over
    the range where both frontiers reach (so the comparison does not hinge on one level). Every
    level lies inside both frontiers (sweeps.frontier.overlap_levels), so both readings exist; a local
    L0 of 0 (no ratio) leaves its level out."""
    local = fronts.get("local", {}).get("l0", [])
    out: dict[str, Any] = {}
    for mode, by_x in fronts.items():
        front = by_x.get("l0", [])
        if mode == "local" or not front or not local:
            continue
        readings = [(y, _read_inside(front, y), _read_inside(local, y)) for y in overlap_levels([front, local], n)]
        out[f"{mode}/local"] = [
            {Y_METRIC: y, "ratio": x / x_local} for y, x, x_local in readings if x is not None and x_local
        ]
    return out


def _modes_without_frontier(usable: list[Trial], degenerate: list[tuple[Trial, str]]) -> list[dict[str, Any]]:
    """(hook, mode) pairs all of whose finished trials are degenerate: that mode has no frontier there."""
    bad = {t.trial_id for t, _ in degenerate}
    pairs = sorted({(t.hook, t.series) for t in usable})
    return [
        {"hook": h, "mode": m, "fix": DEGENERATE_FIX}
        for h, m in pairs
        if all(t.trial_id in bad for t in usable if t.hook == h and t.series == m)
    ]


def _fronts_entry(in_hook: list[Trial], meta: dict[str, Any]) -> dict[str, Any]:
    """One architecture's frontiers at one hook: per mode, and the matched comparisons between modes."""
    fronts = {
        mode: {x: drawn_front([t for t in in_hook if t.series == mode], x) for x in X_METRICS}
        for mode in in_mode_order(t.series for t in in_hook if t.series)
    }
    matched = _matched(fronts)
    curve = _l0_ratio_curve(fronts)
    entry: dict[str, Any] = {
        "modes": {
            mode: {
                "n_finished": sum(t.series == mode for t in in_hook),
                "frontiers": {x: [_front_entry(p) for p in f] for x, f in by_x.items()},
            }
            for mode, by_x in fronts.items()
        },
        "matched": matched,
        "matched_at": _matched_at_levels(fronts, requested_levels(meta)),
        "l0_ratio_curve": curve,
    }
    finetune = finetune_comparison(fronts, in_hook)
    if finetune is not None:
        entry["finetune"] = finetune
    seeds = sorted({t.seed for t in in_hook if t.seed is not None})
    if len(seeds) > 1:
        levels = [y for y in [matched[Y_METRIC], *requested_levels(meta)] if y is not None]
        entry["seed_spread"] = seed_spread(in_hook, seeds, sorted(set(levels)), curve)
    return entry


def seed_spread(
    in_hook: list[Trial], seeds: list[int], levels: list[float], curve: dict[str, Any] | None = None
) -> dict[str, Any]:
    """How far seeds move the comparison: per level, each mode's L0 read off each seed's own frontier
    (no extrapolation), their mean and min-max over seeds, the ratio to local at each seed (a mode's
    seed against local's same seed) with its mean and min-max, and whether the mode difference
    exceeds the seed spread: ``exceeds`` when the mode's and local's min-max ranges over seeds do not
    overlap, ``within`` when they do, None with fewer than two seeds read on either side. ``curve``
    (the pooled L0-ratio curve): the per-seed ratios at each of its levels too."""
    modes = in_mode_order(t.series for t in in_hook if t.series)
    fronts = {
        seed: {mode: drawn_front([t for t in in_hook if t.series == mode and t.seed == seed]) for mode in modes}
        for seed in seeds
    }
    out = []
    for level in levels:
        l0 = {m: {s: _read_inside(fronts[s][m], level) for s in seeds} for m in modes}
        row: dict[str, Any] = {Y_METRIC: level, "l0": l0, "l0_spread": {m: _spread(l0[m].values()) for m in modes}}
        row["ratios"] = _per_seed_ratios(l0, seeds)
        row["verdict"] = {
            f"{m}/local": _verdict(row["l0_spread"][m], row["l0_spread"]["local"])
            for m in l0
            if m != "local" and "local" in l0
        }
        out.append(row)
    curve_spread = {}
    for name, points in (curve or {}).items():
        mode = name.removesuffix("/local")
        rows = []
        for point in points:
            level = point[Y_METRIC]
            l0 = {m: {s: _read_inside(fronts[s][m], level) for s in seeds} for m in ("local", mode)}
            rows.append({Y_METRIC: level, **_per_seed_ratios(l0, seeds)[name]})
        curve_spread[name] = rows
    return {"seeds": seeds, "spread": "mean and min-max over seeds", "levels": out, "l0_ratio_curve": curve_spread}


def _per_seed_ratios(l0: dict[str, dict[int, float | None]], seeds: list[int]) -> dict[str, Any]:
    """Per non-local mode of ``l0`` (mode -> seed -> L0 at one level): its L0 over local's at each seed
    where both were read, with their mean and min-max."""
    out = {}
    for m in l0:
        if m == "local" or "local" not in l0:
            continue
        per_seed = {}
        for s in seeds:
            x, x_local = l0[m][s], l0["local"][s]
            if x is not None and x_local:
                per_seed[s] = x / x_local
        out[f"{m}/local"] = {"per_seed": per_seed, **_spread(per_seed.values())}
    return out


def _spread(values) -> dict[str, Any]:
    vs = [v for v in values if v is not None]
    if not vs:
        return {"n": 0, "mean": None, "min": None, "max": None}
    return {"n": len(vs), "mean": sum(vs) / len(vs), "min": min(vs), "max": max(vs)}


def _verdict(mode: dict[str, Any], local: dict[str, Any]) -> str | None:
    if mode["n"] < 2 or local["n"] < 2:
        return None
    return "exceeds" if mode["max"] < local["min"] or mode["min"] > local["max"] else "within"


def in_architecture_order(names: set[str]) -> list[str]:
    return sorted(names, key=lambda a: (ARCHITECTURES.index(a) if a in ARCHITECTURES else len(ARCHITECTURES), a))


def _all_alive(in_hook: list[Trial]) -> bool:
    """Every trial keeps every dictionary element alive: the alive-elements panel would be one column."""
    return bool(in_hook) and all(
        t.metrics.get("alive_dict_elements") is not None
        and t.metrics.get("alive_dict_elements") == t.metrics.get("n_dict_elements")
        for t in in_hook
    )


def compute_pareto(trials: list[Trial], meta: dict[str, Any]) -> dict[str, Any]:
    """The pareto.json document (schema in docs/report.md) from loaded trials."""
    usable = [t for t in trials if t.state == "finished" and t.hook and t.series]
    degenerate = [(t, r) for t in usable if (r := degenerate_reason(t.metrics))]
    finished = [t for t in usable if not degenerate_reason(t.metrics)]
    for t in trials:
        if t.state == "finished" and not (t.hook and t.series):
            warnings.warn(f"{t.trial_id}: finished but its params.json names no hook or mode; left off the frontiers")
    hooks = sorted(
        {t.hook for t in finished if t.hook},
        key=lambda h: (min((t.layer for t in finished if t.hook == h and t.layer is not None), default=-1), h),
    )
    architectures = in_architecture_order({t.architecture for t in usable})
    hooks_out: dict[str, Any] = {}
    for hook in hooks:
        in_hook = [t for t in finished if t.hook == hook]
        originals = [_num(t.metrics.get("ce_loss_original")) for t in in_hook]
        originals = [v for v in originals if math.isfinite(v)]
        entry: dict[str, Any] = {
            "layer": next((t.layer for t in in_hook if t.layer is not None), None),
            "ce_loss_original": statistics.median(originals) if originals else None,
            "all_alive": _all_alive(in_hook),
        }
        if len(architectures) <= 1:
            entry.update(_fronts_entry(in_hook, meta))
        else:  # one frontier set per architecture: modes are compared within an architecture
            entry["architectures"] = {
                a: _fronts_entry([t for t in in_hook if t.architecture == a], meta)
                for a in architectures
                if any(t.architecture == a for t in in_hook)
            }
            entry["architecture_comparison"] = architecture_comparison(entry["architectures"], requested_levels(meta))
        hooks_out[hook] = entry
    counts = {s: sum(t.state == s for t in trials) for s in STATES}
    return {
        "schema_version": SCHEMA_VERSION,
        **meta,
        "y_metric": Y_METRIC,
        "x_metrics": list(X_METRICS),
        "matched_rule": MATCHED_RULE,
        "architectures": architectures,
        "trial_counts": {**counts, "total": len(trials)},
        "missing_trials": [
            {"trial_id": t.trial_id, "state": t.state, "mode": t.series, "hook": t.hook, "error": t.error}
            for t in trials
            if t.state != "finished"
        ],
        "degenerate_rule": f"CE-loss score < {DEGENERATE_CE_SCORE} or L0 < 1",
        "degenerate_trials": [
            {"trial_id": t.trial_id, "mode": t.series, "hook": t.hook, "sparsity_coeff": t.sparsity_coeff, "reason": r}
            for t, r in degenerate
        ],
        "modes_without_frontier": _modes_without_frontier(usable, degenerate),
        "hooks": hooks_out,
    }


# ---------------------------------------------------------------- writing files


def write_trials_csv(trials: list[Trial], path: Path) -> None:
    """One row per trial: its parameters, then every metric of its final (or latest) row."""
    extra = sorted({k for t in trials for k, v in _metrics(t).items()} - set(PARAM_COLUMNS) - set(METRIC_COLUMNS))
    columns = [*PARAM_COLUMNS, *METRIC_COLUMNS, *extra, "error"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for t in trials:
            row = {**_metrics(t), **{c: getattr(t, c) for c in PARAM_COLUMNS}, "error": t.error}
            writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})


def _matched_lines(view: dict[str, Any], all_alive: bool = False) -> list[str]:
    """report.md: the automatic matched comparison, its readings (``≤``: clipped) with the trials they
    lie between, and the ratios to local (marked as the bounds they are when a reading was clipped; the
    alive ratio left out where every element is alive, as it compares nothing)."""
    mt = view["matched"]
    if not mt["modes"]:
        return []
    lines = [
        f"### Matched comparison at CE-loss increase {_fmt(mt[Y_METRIC])} (automatic: the lowest level every "
        "mode's frontier reaches)",
        "",
        "| mode | L0 | alive elements | L0 read between trials | alive read between trials |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mode, m in mt["modes"].items():
        values = ["–" if x not in m else ("≤ " if m[x]["clipped"] else "") + _fmt(m[x]["value"]) for x in X_METRICS]
        sources = [
            "–"
            if x not in m
            else " / ".join(dict.fromkeys((m[x]["lower_x_trial"]["trial_id"], m[x]["higher_x_trial"]["trial_id"])))
            for x in X_METRICS
        ]
        lines.append(f"| {mode} | " + " | ".join(values + sources) + " |")
    lines.append("")
    for name, r in mt["ratios"].items():
        alive = "" if all_alive else f", alive-elements ratio {_ratio_text(r, 'alive_dict_elements', name)}"
        seeds = _seed_note(view, mt[Y_METRIC], name)
        lines.append(f"{name}: L0 ratio {_ratio_text(r, 'l0', name)}{seeds}{alive}.  ")
    return lines + [""]


def _seed_note(view: dict[str, Any], level: float | None, name: str) -> str:
    """`` (0.8-0.9 over seeds)`` after a ratio read off pooled frontiers, or `` (rests on one seed: only
    seed 1's frontiers reach this level)`` when a single seed's do."""
    spread = view.get("seed_spread")
    if not spread or level is None:
        return ""
    row = next((r for r in spread["levels"] if r[Y_METRIC] == level), None)
    ratio = (row or {}).get("ratios", {}).get(name)
    if not ratio:
        return ""
    if ratio["n"] == 1:
        (seed,) = ratio["per_seed"]
        return f" (rests on one seed: only seed {seed}'s frontiers reach this level)"
    if ratio["n"] == 0:
        return " (no seed's own frontiers reach this level: the pooled frontiers only)"
    return f" ({_fmt(ratio['min'], 3)}-{_fmt(ratio['max'], 3)} over seeds)"


def _one_seed_lines(view: dict[str, Any]) -> list[str]:
    """Where the sweep has one seed: one line saying every reading rests on it."""
    if view.get("seed_spread"):
        return []
    seeds = {p.get("seed") for m in view["modes"].values() for f in m["frontiers"].values() for p in f}
    seeds.discard(None)
    if len(seeds) != 1:
        return []
    return [
        f"One seed ({seeds.pop()}): every reading here rests on it; a sweep with `seed: [0, 1]` in its axes "
        "shows how far seeds move each ratio.",
        "",
    ]


def _requested_lines(view: dict[str, Any]) -> list[str]:
    """report.md: the matched comparison at the levels the sweep asked for (``report.match_at``, a target
    search's CE targets), the first table under each hook: what the sweep was run to measure."""
    if not view.get("matched_at"):
        return []
    modes = list(view["modes"])
    names = [f"{m}/local" for m in modes if m != "local"]
    lines = [
        "### Matched comparison at the levels the sweep asked for (report.match_at, search targets)",
        "",
        "| CE-loss increase | " + " | ".join(f"{m} L0" for m in modes) + " | " + " | ".join(names) + " |",
        "| --- " * (1 + len(modes) + len(names)) + "|",
    ]
    for row in view["matched_at"]:
        cells = [_fmt(row["l0"].get(m)) if row["l0"].get(m) is not None else "out of range" for m in modes]
        for n in names:
            r = row["ratios"].get(n)
            cells.append(_fmt(r, 3) + (_seed_note(view, row[Y_METRIC], n) if r is not None else ""))
        lines.append(f"| {_fmt(row[Y_METRIC])} | " + " | ".join(cells) + " |")
    note = '"out of range": that mode\'s frontier does not span the level (no extrapolation).'
    if any("over seeds" in line for line in lines):
        note += (
            " L0 and ratios are read off the pooled frontiers (every seed's trials); the range over seeds is"
            " of the ratios read off each seed's own frontiers, which the pooled ratio can lie outside (the"
            " pooled frontier is their lower envelope)."
        )
    return lines + ["", note, ""]


def _curve_lines(h: dict[str, Any]) -> list[str]:
    """report.md: the L0-ratio table across the overlap, with each seed's range."""
    lines: list[str] = []
    curve = h.get("l0_ratio_curve", {})
    if curve:
        by_seed = (h.get("seed_spread") or {}).get("l0_ratio_curve", {})
        what = "level: ratio (min-max of the per-seed ratios)" if by_seed else "level: ratio"
        lines += [
            "### L0 ratio to local across the CE range where the frontiers overlap",
            "",
            f"| modes | L0 ratio at CE-loss increase ({what}) |",
            "| --- | --- |",
        ]
        for name, c in curve.items():
            spreads = by_seed.get(name, [None] * len(c))
            body = ", ".join(
                f"{_fmt(p[Y_METRIC], 3)}: {_fmt(p['ratio'], 3)}{_seed_range(sp)}"
                for p, sp in zip(c, spreads, strict=True)
            )
            lines.append(f"| {name} | {body or 'no overlap'} |")
        if by_seed:
            lines += [
                "",
                "The pooled frontiers' ratio; in brackets the range of the ratio read off each seed's own frontiers. "
                "The pooled frontier is the lower envelope of every seed's trials, so its ratio can lie outside "
                "that range; the range is what tells a mode difference from seed noise.",
            ]
        lines.append("")
    return lines


def _seed_range(spread: dict[str, Any] | None) -> str:
    """`` (0.89-0.93)``: a ratio's min-max over seeds (``(1 seed)`` or nothing when it says no more)."""
    if spread is None:
        return ""
    if spread["n"] < 2:
        return f" ({spread['n']} seed{'s' if spread['n'] != 1 else ''})"
    return f" ({_fmt(spread['min'], 3)}-{_fmt(spread['max'], 3)})"


BOUND_TEXT = {
    "upper": ("≤ ", " (an upper bound: {mode}'s reading is clipped)"),
    "lower": ("≥ ", " (a lower bound: local's reading is clipped)"),
    "neither": ("", " (both readings clipped: bounds nothing)"),
}


def _ratio_text(ratios: dict[str, Any], x: str, name: str) -> str:
    """A matched ratio for report.md, marked as the bound it is when a reading was clipped."""
    bound = (ratios.get("bounds") or {}).get(x)
    prefix, suffix = BOUND_TEXT.get(bound or "", ("", ""))
    return prefix + _fmt(ratios[x], 3) + suffix.format(mode=name.split("/")[0])


def _degenerate_lines(doc: dict[str, Any]) -> list[str]:
    if not doc.get("degenerate_trials"):
        return []
    lines = [
        "## Degenerate trials",
        "",
        f"Left out of the frontiers and never used as a matched level ({doc['degenerate_rule']}).",
        "",
    ]
    for g in doc["modes_without_frontier"]:
        lines.append(
            f"**{g['mode']} at {g['hook']}: every trial is degenerate, so this mode has no frontier "
            f"there.** Fix: {g['fix']}.  "
        )
    lines += ["", "| trial | mode | hook | sparsity coeff | reason |", "| --- | --- | --- | --- | --- |"]
    lines += [
        f"| {t['trial_id']} | {t['mode']} | {t['hook']} | {_fmt(t['sparsity_coeff'])} | {t['reason']} |"
        for t in doc["degenerate_trials"]
    ]
    return lines + [""]


def analysis_lines(exp_dir: Path, out_dir: Path) -> list[str]:
    """report.md's "Inside the dictionaries": the decoder geometry that ``sweeps analyse`` left in
    ``<experiment>/analysis/`` (its geometry.md, embedded as written, with its relative links made
    relative to the report), or how to make it. The report renders nothing of the analysis itself."""
    analysis = exp_dir / ANALYSIS_DIR
    lines = ["## Inside the dictionaries", ""]
    try:
        geometry = (analysis / ANALYSIS_GEOMETRY_MD).read_text()
    except OSError:
        return lines + [
            f"No analysis yet: `python -m sweeps analyse {exp_dir}` writes a feature browser and the decoder "
            f"geometry of the frontier SAEs to {analysis}, shown here by the next report.",
            "",
        ]
    rel = Path(os.path.relpath(analysis, out_dir)).as_posix()
    lines += [f"Feature browser of the analysed SAEs: [{rel}/index.html]({rel}/index.html).", ""]
    return lines + _relinked(geometry, rel).splitlines() + [""]


def _relinked(markdown: str, prefix: str) -> str:
    """``markdown``'s relative link targets (``](geometry.png)``) prefixed with ``prefix/``; absolute
    paths, URLs and anchors kept."""
    return re.sub(r"\]\((?![a-zA-Z][a-zA-Z0-9+.-]*:|/|#)([^)\s]+)\)", lambda m: f"]({prefix}/{m.group(1)})", markdown)


def _hook_lines(hook: str, h: dict[str, Any], png: Path) -> list[str]:
    """report.md's section of one hook: the plot, then per architecture the comparisons at the levels the
    sweep asked for first, the automatic matched level, the ratio across the overlap, seeds, fine-tunes
    and the frontier trials; with several architectures, the architectures compared with each other."""
    svg = png.with_suffix(".svg").name
    lines = [
        f"## {hook}",
        "",
        f"![{hook} frontiers]({png.name})",
        "",
        f"Original model CE loss: {_fmt(h['ce_loss_original'], 5)}. Vector version: [{svg}]({svg}).",
        "",
    ]
    if h.get("all_alive"):
        lines += [
            "Alive elements: every finished trial here keeps all its dictionary elements alive, so the "
            "alive-elements panel (one column) is left out and no alive ratio is given: alive elements do "
            "not separate the modes here.",
            "",
        ]
    for arch, view in hook_views(h):
        if arch is not None:
            lines += [f"### {arch}: the modes compared within this architecture", ""]
        lines += _one_seed_lines(view)
        lines += _requested_lines(view)
        lines += _matched_lines(view, bool(h.get("all_alive")))
        lines += _curve_lines(view)
        lines += _seed_lines(view.get("seed_spread"))
        lines += finetune_lines(view.get("finetune"))
        lines += _frontier_trial_lines(view)
    return lines + architecture_lines(h.get("architecture_comparison"))


def render_markdown(doc: dict[str, Any], pngs: dict[str, Path], inside: list[str] | None = None) -> str:
    c = doc["trial_counts"]
    mixed = len(doc["eval_tokens"]) > 1 or len(doc["n_ctx"]) > 1
    lines = [
        f"# Sweep report: {doc['sweep']}",
        "",
        f"Evaluation: {settings_line(doc)}. CE-loss values at different context lengths or on "
        "different eval tokens are not comparable."
        + (" **These trials used more than one eval setting.**" if mixed else ""),
        "",
        f"Trials: {c['total']} in all: " + ", ".join(f"{c[s]} {s}" for s in STATES) + ". "
        "Only finished trials enter the frontiers.",
        "",
        "Data: [trials.csv](trials.csv) (every trial), [pareto.json](pareto.json) (frontiers, matched comparison).",
        "",
        "Matched comparison: " + doc["matched_rule"],
        "",
    ]
    for hook, h in doc["hooks"].items():
        lines += _hook_lines(hook, h, pngs[hook])
    if pngs.get("_l0_ratio"):
        lines += ["## L0 ratio to local", "", f"![L0 ratio]({pngs['_l0_ratio'].name})", ""]
    if pngs.get("_architectures"):
        lines += ["## Architectures compared", "", f"![architectures]({pngs['_architectures'].name})", ""]
    lines += inside or []
    lines += _degenerate_lines(doc)
    lines += ["## Missing trials", ""]
    if doc["missing_trials"]:
        lines += ["| trial | state | mode | hook | error |", "| --- | --- | --- | --- | --- |"]
        lines += [
            f"| {t['trial_id']} | {t['state']} | {t['mode'] or '–'} | {t['hook'] or '–'} | "
            f"{(t['error'] or '').replace('|', '/')} |"
            for t in doc["missing_trials"]
        ]
    else:
        lines.append("None: every trial finished.")
    return "\n".join(lines) + "\n"


def _seed_lines(spread: dict[str, Any] | None) -> list[str]:
    """report.md: the comparison across seeds (each seed's own frontiers), a table and one plain
    sentence per level and mode: does the mode difference exceed the seed spread?"""
    if not spread:
        return []
    seeds = spread["seeds"]
    lines = [
        f"### Across seeds {', '.join(str(s) for s in seeds)} (each seed's own frontiers; mean and min-max)",
        "",
        "| CE-loss increase | mode | " + " | ".join(f"L0 seed {s}" for s in seeds) + " | L0 mean (min-max) | "
        "ratio to local mean (min-max) |",
        "| --- " * (4 + len(seeds)) + "|",
    ]
    sentences = []
    for row in spread["levels"]:
        for mode, per_seed in row["l0"].items():
            ratio = row["ratios"].get(f"{mode}/local")
            cells = [_fmt(per_seed[s]) if per_seed[s] is not None else "out of range" for s in seeds]
            lines.append(
                f"| {_fmt(row[Y_METRIC], 3)} | {mode} | "
                + " | ".join(cells)
                + f" | {_spread_text(row['l0_spread'][mode])}"
                f" | {_spread_text(ratio, 3) if ratio else '–'} |"
            )
            verdict = row["verdict"].get(f"{mode}/local")
            if verdict is not None:
                lm, ll = row["l0_spread"][mode], row["l0_spread"]["local"]
                sentences.append(
                    f"At CE-loss increase {_fmt(row[Y_METRIC], 3)}, {mode}'s L0 ({_spread_text(lm)}) against "
                    f"local's ({_spread_text(ll)}): "
                    + (
                        "the mode difference exceeds the seed spread (the ranges over seeds do not overlap)."
                        if verdict == "exceeds"
                        else "the mode difference is within the seed spread (the ranges over seeds overlap)."
                    )
                )
    return lines + [""] + [f"{x}  " for x in sentences] + [""]


def _spread_text(sp: dict[str, Any], digits: int = 4) -> str:
    if not sp or not sp.get("n"):
        return "–"
    return f"{_fmt(sp['mean'], digits)} ({_fmt(sp['min'], digits)}-{_fmt(sp['max'], digits)})"


def _frontier_trial_lines(view: dict[str, Any]) -> list[str]:
    """report.md: the trials on each mode's frontiers, by L0, with their sparsity knob."""
    lines = [
        "### Frontier trials",
        "",
        "| mode | on frontier | trial | sparsity coeff or k | dict ratio | samples in all | L0 | alive elements | "
        "CE-loss increase |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, m in view["modes"].items():
        on: dict[str, list[str]] = {}
        points = {}
        for x, front in m["frontiers"].items():
            for p in front:
                on.setdefault(p["trial_id"], []).append("L0" if x == "l0" else "alive")
                points[p["trial_id"]] = p
        for tid, p in sorted(points.items(), key=lambda kv: _num(kv[1]["metrics"].get("l0"))):
            mm = p["metrics"]
            knob = f"k {p['k']}" if p.get("k") is not None else _fmt(p["sparsity_coeff"])
            knob += f", target L0 {_fmt(p['target_l0'])}" if p.get("target_l0") is not None else ""
            samples = (mm.get("parent_n_samples") or 0) + (mm.get("n_samples") or 0)  # a fine-tune's parent too
            lines.append(
                f"| {mode} | {', '.join(on[tid])} | {tid} | {knob} | "
                f"{_fmt(p['dict_size_to_input_ratio'])} | {samples or '-'} | {_fmt(mm.get('l0'))} | "
                f"{_fmt(mm.get('alive_dict_elements'))} | {_fmt(mm.get(Y_METRIC))} |"
            )
    return lines + [""]


def write_report(exp_dir: str | Path, out_dir: str | Path | None = None, trials: list[Trial] | None = None) -> Path:
    """Write trials.csv, pareto.json, frontier_<hook>.png/.svg and report.md; return report.md's path.
    ``out_dir`` defaults to ``exp_dir/report``; ``trials``: ``load_trials(exp_dir)`` when the caller
    already has them."""
    exp_dir = Path(exp_dir)
    out_dir = Path(out_dir) if out_dir is not None else exp_dir / REPORT_DIR
    trials = load_trials(exp_dir) if trials is None else trials
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = compute_pareto(trials, read_sweep_meta(exp_dir, trials))
    write_trials_csv(trials, out_dir / "trials.csv")
    (out_dir / "pareto.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    pngs = dict(zip(doc["hooks"], plot_frontiers(doc, trials, out_dir), strict=True))
    for key, png in (("_l0_ratio", plot_l0_ratios(doc, out_dir)), ("_architectures", plot_architectures(doc, out_dir))):
        if png is not None:
            pngs[key] = png
    report = out_dir / "report.md"
    report.write_text(render_markdown(doc, pngs, analysis_lines(exp_dir, out_dir)))
    return report


# ---------------------------------------------------------------- W&B
