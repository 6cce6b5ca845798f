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
import statistics
import warnings
from pathlib import Path
from typing import Any

from e2e_sae.hooks import hook_slug
from e2e_sae.metric_names import EVAL_CONTEXT, EVAL_METRICS, PROGRESS
from e2e_sae.modes import MODES
from sweeps.layout import REPORT_DIR
from sweeps.pareto import FrontPoint, interpolate_at, matched_target, pareto_front
from sweeps.results import TUNE_KEYS, load_trials, read_sweep_meta
from sweeps.trial import STATES, Trial

SCHEMA_VERSION = 1
MODE_ORDER = MODES
Y_METRIC = "ce_loss_increase"
X_METRICS = ("l0", "alive_dict_elements")  # lower is better on both, as on y
LOG_X = {"l0": True, "alive_dict_elements": False}  # interpolation space = the plot's x axis
PARAM_COLUMNS = ("trial_id", "state", "mode", "hook", "layer", "dict_size_to_input_ratio",
                 "n_dict_elements", "sparsity_coeff", "seed", "n_samples")
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
    return {k: _clean(v) for k, v in t.metrics.items()
            if k not in TUNE_KEYS and (v is None or isinstance(v, (int, float, str, bool)))}


def _front_entry(p: FrontPoint) -> dict[str, Any]:
    t: Trial = p.payload
    return {"trial_id": t.trial_id, "sparsity_coeff": t.sparsity_coeff,
            "dict_size_to_input_ratio": t.dict_size_to_input_ratio, "seed": t.seed,
            "n_samples": t.n_samples, "metrics": _metrics(t)}


def _neighbour(p: FrontPoint, x_metric: str) -> dict[str, Any]:
    return {"trial_id": p.payload.trial_id, x_metric: p.x, Y_METRIC: p.y}


def _ordered_modes(modes: set[str]) -> list[str]:
    return [m for m in MODE_ORDER if m in modes] + sorted(modes - set(MODE_ORDER))


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    return a["value"] / b["value"] if a and b and b["value"] else None


def _matched(fronts: dict[str, dict[str, list[FrontPoint]]]) -> dict[str, Any]:
    target = matched_target(f for by_x in fronts.values() for f in by_x.values())
    modes_out: dict[str, Any] = {}
    for mode, by_x in fronts.items():
        for x_metric, front in by_x.items():
            if target is None or not front:
                continue
            r = interpolate_at(front, target, log_x=LOG_X[x_metric])
            modes_out.setdefault(mode, {})[x_metric] = {
                "value": r.x, "clipped": r.clipped, "interpolation": "log" if LOG_X[x_metric] else "linear",
                "lower_x_trial": _neighbour(r.lower_x, x_metric), "higher_x_trial": _neighbour(r.higher_x, x_metric)}
    ratios: dict[str, Any] = {}
    for mode in modes_out:
        if mode != "local":
            ratios[f"{mode}/local"] = {x: _ratio(modes_out[mode].get(x), modes_out.get("local", {}).get(x))
                                       for x in X_METRICS}
    return {Y_METRIC: target, "modes": modes_out, "ratios": ratios}


def compute_pareto(trials: list[Trial], meta: dict[str, Any]) -> dict[str, Any]:
    """The pareto.json document (schema in docs/report.md) from loaded trials."""
    finished = [t for t in trials if t.state == "finished" and t.hook and t.mode]
    for t in trials:
        if t.state == "finished" and not (t.hook and t.mode):
            warnings.warn(f"{t.trial_id}: finished but its params.json names no hook or mode; left off the frontiers")
    hooks = sorted({t.hook for t in finished}, key=lambda h: (min(
        (t.layer for t in finished if t.hook == h and t.layer is not None), default=-1), h))
    hooks_out: dict[str, Any] = {}
    for hook in hooks:
        in_hook = [t for t in finished if t.hook == hook]
        fronts = {mode: {x: pareto_front([(_num(t.metrics.get(x)), _num(t.metrics.get(Y_METRIC)), t)
                                          for t in in_hook if t.mode == mode]) for x in X_METRICS}
                  for mode in _ordered_modes({t.mode for t in in_hook})}
        originals = [_num(t.metrics.get("ce_loss_original")) for t in in_hook]
        originals = [v for v in originals if math.isfinite(v)]
        hooks_out[hook] = {
            "layer": next((t.layer for t in in_hook if t.layer is not None), None),
            "ce_loss_original": statistics.median(originals) if originals else None,
            "modes": {mode: {"n_finished": sum(t.mode == mode for t in in_hook),
                             "frontiers": {x: [_front_entry(p) for p in f] for x, f in by_x.items()}}
                      for mode, by_x in fronts.items()},
            "matched": _matched(fronts),
        }
    counts = {s: sum(t.state == s for t in trials) for s in STATES}
    return {
        "schema_version": SCHEMA_VERSION, **meta, "y_metric": Y_METRIC, "x_metrics": list(X_METRICS),
        "matched_rule": MATCHED_RULE, "trial_counts": {**counts, "total": len(trials)},
        "missing_trials": [{"trial_id": t.trial_id, "state": t.state, "mode": t.mode, "hook": t.hook,
                            "error": t.error} for t in trials if t.state != "finished"],
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


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float) and v.is_integer() and abs(v) >= 10:
        return f"{int(v):,}" if abs(v) >= 10_000 else str(int(v))
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _settings_line(doc: dict[str, Any]) -> str:
    def join(vals: list[Any]) -> str:
        return " / ".join(f"{v:,}" for v in vals) if vals else "unknown"
    return (f"model {doc['model'] or 'unknown'}, {join(doc['eval_tokens'])} eval tokens, "
            f"context length (n_ctx) {join(doc['n_ctx'])}")


def plot_frontiers(doc: dict[str, Any], trials: list[Trial], out_dir: Path) -> list[Path]:
    """Per hook, the paper's Figure 1 layout: CE-loss increase against L0 (log x) and against alive
    elements, one colour per mode, finished trials faint, the frontier as connected points. PNG + SVG."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state (renders with Agg)

    colours = {m: f"C{i}" for i, m in enumerate(MODE_ORDER)}
    pngs = []
    for hook, h in doc["hooks"].items():
        fig = Figure(figsize=(11, 4.4), layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        for ax, x_metric in zip(axes, X_METRICS):
            for i, (mode, m) in enumerate(h["modes"].items()):
                c = colours.get(mode, f"C{len(MODE_ORDER) + i}")
                pts = [(_num(t.metrics.get(x_metric)), _num(t.metrics.get(Y_METRIC))) for t in trials
                       if t.state == "finished" and t.hook == hook and t.mode == mode]
                if pts:
                    ax.scatter(*zip(*pts), color=c, alpha=0.3, s=18, linewidths=0)
                front = m["frontiers"][x_metric]
                ax.plot([p["metrics"][x_metric] for p in front], [p["metrics"][Y_METRIC] for p in front],
                        "o-", color=c, ms=4, label=mode)
                read = h["matched"]["modes"].get(mode, {}).get(x_metric)
                if read:  # where the matched comparison reads this frontier
                    ax.plot(read["value"], h["matched"][Y_METRIC], "x", color=c, ms=8, mew=2)
            if h["matched"][Y_METRIC] is not None:
                ax.axhline(h["matched"][Y_METRIC], color="grey", ls=":", lw=1, label="matched level")
            if LOG_X[x_metric]:
                ax.set_xscale("log")
            ax.set_xlabel("L0" if x_metric == "l0" else "alive dictionary elements")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("CE loss increase")
        axes[0].legend()
        fig.suptitle(f"{doc['sweep']}: {hook}. Original model CE loss {_fmt(h['ce_loss_original'], 5)}\n"
                     f"({_settings_line(doc)})", fontsize=10)
        png = out_dir / f"frontier_{hook_slug(hook)}.png"
        fig.savefig(png, dpi=120)
        fig.savefig(png.with_suffix(".svg"), metadata={"Date": None})
        pngs.append(png)
    return pngs


def render_markdown(doc: dict[str, Any], pngs: dict[str, Path]) -> str:
    c = doc["trial_counts"]
    mixed = len(doc["eval_tokens"]) > 1 or len(doc["n_ctx"]) > 1
    lines = [f"# Sweep report: {doc['sweep']}", "",
             f"Evaluation: {_settings_line(doc)}. CE-loss values at different context lengths or on "
             "different eval tokens are not comparable." + (" **These trials used more than one eval "
                                                              "setting.**" if mixed else ""), "",
             f"Trials: {c['total']} in all: " + ", ".join(f"{c[s]} {s}" for s in STATES) + ". "
             "Only finished trials enter the frontiers.", "",
             "Data: [trials.csv](trials.csv) (every trial), [pareto.json](pareto.json) (frontiers, "
             "matched comparison).", "", "Matched comparison: " + doc["matched_rule"], ""]
    for hook, h in doc["hooks"].items():
        png, svg = pngs[hook].name, pngs[hook].with_suffix(".svg").name
        lines += [f"## {hook}", "", f"![{hook} frontiers]({png})", "",
                  f"Original model CE loss: {_fmt(h['ce_loss_original'], 5)}. Vector version: [{svg}]({svg}).", ""]
        mt = h["matched"]
        if mt["modes"]:
            lines += [f"### Matched comparison at CE-loss increase {_fmt(mt[Y_METRIC])}", "",
                      "| mode | L0 | alive elements | L0 read between trials | alive read between trials |",
                      "| --- | --- | --- | --- | --- |"]
            for mode, m in mt["modes"].items():
                values = ["–" if x not in m else ("≤ " if m[x]["clipped"] else "") + _fmt(m[x]["value"])
                          for x in X_METRICS]
                sources = ["–" if x not in m else " / ".join(dict.fromkeys(
                    (m[x]["lower_x_trial"]["trial_id"], m[x]["higher_x_trial"]["trial_id"]))) for x in X_METRICS]
                lines.append(f"| {mode} | " + " | ".join(values + sources) + " |")
            lines.append("")
            lines += [f"{name}: L0 ratio {_fmt(r['l0'], 3)}, alive-elements ratio "
                      f"{_fmt(r['alive_dict_elements'], 3)}.  " for name, r in mt["ratios"].items()]
            lines.append("")
        lines += ["### Frontier trials", "",
                  "| mode | on frontier | trial | sparsity coeff | dict ratio | L0 | alive elements | CE-loss increase |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for mode, m in h["modes"].items():
            on: dict[str, list[str]] = {}
            points = {}
            for x, front in m["frontiers"].items():
                for p in front:
                    on.setdefault(p["trial_id"], []).append("L0" if x == "l0" else "alive")
                    points[p["trial_id"]] = p
            for tid, p in sorted(points.items(), key=lambda kv: _num(kv[1]["metrics"].get("l0"))):
                mm = p["metrics"]
                lines.append(f"| {mode} | {', '.join(on[tid])} | {tid} | {_fmt(p['sparsity_coeff'])} | "
                             f"{_fmt(p['dict_size_to_input_ratio'])} | {_fmt(mm.get('l0'))} | "
                             f"{_fmt(mm.get('alive_dict_elements'))} | {_fmt(mm.get(Y_METRIC))} |")
        lines.append("")
    lines += ["## Missing trials", ""]
    if doc["missing_trials"]:
        lines += ["| trial | state | mode | hook | error |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {t['trial_id']} | {t['state']} | {t['mode'] or '–'} | {t['hook'] or '–'} | "
                  f"{(t['error'] or '').replace('|', '/')} |" for t in doc["missing_trials"]]
    else:
        lines.append("None: every trial finished.")
    return "\n".join(lines) + "\n"


def write_report(exp_dir: str | Path, out_dir: str | Path | None = None,
                 trials: list[Trial] | None = None) -> Path:
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
    pngs = dict(zip(doc["hooks"], plot_frontiers(doc, trials, out_dir)))
    report = out_dir / "report.md"
    report.write_text(render_markdown(doc, pngs))
    return report


# ---------------------------------------------------------------- W&B

