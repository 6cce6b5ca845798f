"""A sweep file's ``search: {kind: frontier}`` block turned into the searcher's groups, and the
search's standing read back from the trials on disk (``status`` on a copied experiment needs no
Tune state: sweep.yaml holds the search settings, params.json and result.json the trials)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sweeps.planning.curve_search import GroupSearch, Proposal, search_value
from sweeps.planning.grid_cost import grid_costs
from sweeps.planning.spec import SweepSpec, expand_groups


def build_groups(spec: SweepSpec) -> tuple[dict[str, GroupSearch], dict[str, dict[str, Any]]]:
    """One GroupSearch per group (mode, layer, dict ratio, seed) and its trial-config template."""
    s = spec.search
    templates = expand_groups(spec)
    groups = {
        key: GroupSearch(
            key=key,
            metric=s.metric,
            targets=s.target_values,
            tolerance=s.tolerance,
            budget=s.budget,
            start=s.start.get(t["mode"], 1.0),
        )
        for key, t in templates.items()
    }
    return groups, templates


def total_budget(spec: SweepSpec) -> int:
    return spec.search.budget * len(expand_groups(spec))


def groups_from_trials(spec: SweepSpec, trials: list[Any]) -> dict[str, GroupSearch]:
    """The groups as the trials on disk (sweeps.planning.trial.Trial) leave them, recorded as the searcher
    records them: finished trials with their metric (a dead one beyond every target:
    sweeps.planning.curve_search.search_value), errored ones as failed, running or pending ones as pending."""
    groups, templates = build_groups(spec)
    by_axes = {
        _axes(t["mode"], t["hook"], t["dict_size_to_input_ratio"], t["seed"]): key for key, t in templates.items()
    }
    for t in trials:
        if t.mode is None or t.sparsity_coeff is None:
            continue
        key = by_axes.get(_axes(t.mode, t.hook, t.dict_size_to_input_ratio, t.seed))
        group = groups.get(key) if key is not None else None
        if group is None:
            continue
        proposal = Proposal(float(t.sparsity_coeff), None)
        value = search_value(group.metric, t.metrics) if t.state == "finished" else None
        if value is not None:
            group.finished.append((proposal.coeff, value))
        elif t.state in ("finished", "errored"):
            group.failed[t.trial_id] = proposal
        else:
            group.pending[t.trial_id] = proposal
    return groups


def _axes(mode: Any, hook: Any, ratio: Any, seed: Any) -> tuple:
    return (mode, hook, None if ratio is None else float(ratio), seed)


def status_lines(spec: SweepSpec, trials: list[Any]) -> list[str]:
    """Per group and target: met or not (a live trial within tolerance, live trials on both sides), the
    closest finished trial, and for a target not met its standing: why, and what to change."""
    groups = groups_from_trials(spec, trials)
    s = spec.search
    lines = [
        f"frontier search on {s.metric}: targets {s.target_values}, tolerance {s.tolerance:g} "
        f"(|log(achieved/target)|, with trials on both sides of the target), budget {s.budget} trials per group"
    ]
    lines.append(f"{'group':<28} {'target':>8} {'met':>5} {'closest coeff':>14} {s.metric:>16} {'trials':>7}  note")
    for key, g in groups.items():
        for row in g.summary():
            coeff, value = row["closest_coeff"], row["closest_value"]
            note = "" if row["met"] else f"  {row['state']}: {row['reason']}"
            lines.append(
                f"{key:<28} {row['target']:>8g} {'yes' if row['met'] else 'no':>5} "
                f"{'-' if coeff is None else format(coeff, '.4g'):>14} "
                f"{'-' if value is None else format(value, '.4g'):>16} "
                f"{len(g.finished) + len(g.failed):>7}{note}"
            )
    return lines + grid_cost_lines(spec, groups)


def grid_cost_lines(spec: SweepSpec, groups: dict[str, GroupSearch]) -> list[str]:
    """Per mode: the trials this search spent against the smallest log-spaced grid meeting every target
    (sweeps.planning.grid_cost: sized with hindsight from the search's own curves, so it flatters the grid)."""
    templates = expand_groups(spec)
    by_mode: dict[str, dict[str, Sequence[tuple[float, float]]]] = {}
    for key, g in groups.items():
        by_mode.setdefault(templates[key]["mode"], {})[key] = list(g.finished)
    lines = [
        "against a grid (one log-spaced coefficient list per mode, the smallest that meets every target "
        "on these trials' curves):"
    ]
    for cost in grid_costs(by_mode, spec.search.target_values, spec.search.tolerance):
        spent = sum(len(groups[k].finished) + len(groups[k].failed) for k in by_mode[cost.mode])
        grid = (
            "no grid meets every target within the measured range (it needs trials on both sides of each)"
            if cost.n_trials is None
            else f"{cost.n_coeffs} coefficients x {cost.n_groups} groups = {cost.n_trials} trials "
            f"({', '.join(format(c, '.3g') for c in cost.coeffs)})"
        )
        lines.append(f"  {cost.mode:<8} search {spent} trials; grid {grid}")
    return lines


def plan_lines(spec: SweepSpec) -> list[str]:
    """Groups, targets, budget and each group's first proposal."""
    groups, _ = build_groups(spec)
    s = spec.search
    lines = [
        f"frontier search on {s.metric}: targets {s.target_values}, tolerance {s.tolerance:g}, "
        f"at most {s.budget} trials per group, {len(groups)} groups: at most {s.budget * len(groups)} trials"
    ]
    for key, g in groups.items():
        first = g.proposals()
        lines.append(f"  {key:<28} first coefficient {first[0].coeff:.4g}" if first else f"  {key}")
    return lines
