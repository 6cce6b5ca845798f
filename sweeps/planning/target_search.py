"""A sweep file's ``search: {kind: targets}`` block turned into one :class:`CurveSearch` per curve, and the
search's standing read back from the trials on disk (``status`` on a copied experiment needs no Tune
state: sweep.yaml holds the search settings, params.json and result.json the trials)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sweeps.planning.curve_search import CurveSearch, Proposal
from sweeps.planning.grid_cost import grid_costs
from sweeps.planning.plan import Plan


def build_curves(plan: Plan) -> dict[str, CurveSearch]:
    """One CurveSearch per curve of the plan (its template: ``plan.curves``), from its start and
    dictionary size (:mod:`sweeps.planning.curve_start`)."""
    s = plan.spec.search
    return {
        name: CurveSearch(
            key=name,
            metric=s.metric,
            targets=s.target_values,
            tolerance=s.tolerance,
            budget=s.budget,
            start=start.start,
            knob="k" if t.k is not None else "coeff",
            n_dict=start.n_dict,
        )
        for name, t, start in zip(plan.names, plan.trials, plan.starts, strict=True)
    }


def packable_curves(plan: Plan) -> dict[str, list[str]]:
    """Per curve, the other curves whose proposals may train in one grouped Tune trial with its own:
    those whose run configs differ only in what a group's members may differ in (seed, dict ratio; the
    sample order must be shared, so seeds pack only where ``data.seed`` is set). With ``group_size`` K,
    a grouped trial fills its K places from one curve first, then from these (sweeps/running/searcher.py)."""
    from e2e_sae.group import shared_fields

    keys = {
        name: json.dumps(shared_fields(cfg), sort_keys=True, default=str)
        for name, cfg in zip(plan.names, plan.run_configs, strict=True)
    }
    return {name: [other for other in keys if other != name and keys[other] == key] for name, key in keys.items()}


def total_budget(plan: Plan) -> int:
    return plan.spec.search.budget * len(plan.trials)


def curves_from_trials(plan: Plan, trials: list[Any]) -> dict[str, CurveSearch]:
    """The curves as the trials on disk (sweeps.planning.trial.Trial) leave them, recorded as the searcher
    records them: finished trials with their metric (a degenerate one beyond every target:
    :func:`sweeps.planning.curve_search.search_value`), errored ones as failed, running or pending ones as pending."""
    curves = build_curves(plan)
    by_axes = {
        _axes(t.mode, t.architecture, t.hook, t.dict_size_to_input_ratio, t.seed): name
        for name, t in zip(plan.names, plan.trials, strict=True)
    }
    for t in trials:
        knob = t.k if t.k is not None else t.sparsity_coeff
        if t.mode is None or knob is None or t.finetune is not None:  # a fine-tune is on no curve
            continue
        key = by_axes.get(_axes(t.mode, t.architecture, t.hook, t.dict_size_to_input_ratio, t.seed))
        curve = curves.get(key) if key is not None else None
        if curve is None:
            continue
        proposal = Proposal(float(knob), None)
        if t.state == "finished" and curve.add_finished(proposal.coeff, t.metrics):
            continue
        if t.state in ("finished", "errored"):
            curve.failed[t.trial_id] = proposal
        else:
            curve.pending[t.trial_id] = proposal
    return curves


def _axes(mode: Any, architecture: Any, hook: Any, ratio: Any, seed: Any) -> tuple:
    return (mode, architecture, hook, None if ratio is None else float(ratio), seed)


def status_lines(plan: Plan, trials: list[Any]) -> list[str]:
    """Per curve and target: met or not (a live trial within tolerance, live trials on both sides), the
    closest finished trial, and for a target not met its standing: why, and what to change."""
    curves = curves_from_trials(plan, trials)
    s = plan.spec.search
    lines = [
        f"target search on {s.metric}: targets {s.target_values}, tolerance {s.tolerance:g} "
        f"(|log(achieved/target)|, with trials on both sides of the target), budget {s.budget} trials per curve"
    ]
    lines.append(f"{'curve':<28} {'target':>8} {'met':>5} {'closest coeff':>14} {s.metric:>16} {'trials':>7}  note")
    for key, g in curves.items():
        for row in g.summary():
            coeff, value = row["closest_coeff"], row["closest_value"]
            note = "" if row["met"] else f"  {row['state']}: {row['reason']}"
            lines.append(
                f"{key:<28} {row['target']:>8g} {'yes' if row['met'] else 'no':>5} "
                f"{'-' if coeff is None else format(coeff, '.4g'):>14} "
                f"{'-' if value is None else format(value, '.4g'):>16} "
                f"{len(g.finished) + len(g.failed):>7}{note}"
            )
    return lines + grid_cost_lines(plan, curves)


def grid_cost_lines(plan: Plan, curves: dict[str, CurveSearch]) -> list[str]:
    """Per mode: the trials this search spent against the smallest log-spaced grid meeting every target
    (sweeps.planning.grid_cost: sized with hindsight from the search's own curves, so it flatters the grid)."""
    modes = {  # a grid is one list per mode and architecture (of coefficients, or of k)
        name: f"{t.mode}" if t.architecture == "relu" else f"{t.mode} {t.architecture}"
        for name, t in zip(plan.names, plan.trials, strict=True)
    }
    by_mode: dict[str, dict[str, Sequence[tuple[float, float]]]] = {}
    for key, g in curves.items():
        by_mode.setdefault(modes[key], {})[key] = list(g.finished)
    lines = [
        "against a grid (one log-spaced coefficient or k list per mode, the smallest that meets every target "
        "on these trials' curves):"
    ]
    for cost in grid_costs(by_mode, plan.spec.search.target_values, plan.spec.search.tolerance):
        spent = sum(len(curves[k].finished) + len(curves[k].failed) for k in by_mode[cost.mode])
        grid = (
            "no grid meets every target within the measured range (it needs trials on both sides of each)"
            if cost.n_trials is None
            else f"{cost.n_coeffs} coefficients x {cost.n_curves} curves = {cost.n_trials} trials "
            f"({', '.join(format(c, '.3g') for c in cost.coeffs)})"
        )
        lines.append(f"  {cost.mode:<8} search {spent} trials; grid {grid}")
    return lines


def plan_lines(plan: Plan) -> list[str]:
    """Curves, targets, budget and each curve's first proposal."""
    curves = build_curves(plan)
    s = plan.spec.search
    lines = [
        f"target search on {s.metric}: targets {s.target_values}, tolerance {s.tolerance:g}, "
        f"at most {s.budget} trials per curve, {len(curves)} curves: at most {s.budget * len(curves)} trials"
    ]
    seeds = plan.spec.axes.seed
    if len(seeds) > 1:  # every seed is a curve of its own: the budget grows with the seeds
        per_seed = len(curves) // len(seeds)
        lines.append(f"  {len(seeds)} seeds: {per_seed} curves and at most {s.budget * per_seed} trials per seed")
    for (key, g), start in zip(curves.items(), plan.starts, strict=True):
        first = g.proposals()
        knob = "k" if g.knob == "k" else "coefficient"
        why = f" ({start.why})" if start.why else ""
        lines.append(f"  {key:<28} first {knob} {first[0].coeff:.4g}{why}" if first else f"  {key}")
        for t in g.targets:
            standing = g.standing(t)
            if standing.state == "out of reach":
                lines.append(f"    target {t:g}: out of reach: {standing.reason}")
    return lines
