"""Which SAEs ``sweeps analyse`` looks inside: per (hook, mode) the frontier SAE closest to the report's
matched CE-loss increase (the report's own frontiers, :func:`sweeps.reporting.report.compute_pareto`),
plus another seed of the same mode as a baseline when the sweep has one; or the trials ``--trials``
names. Every pick's checkpoint is found here, before any model loads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e_sae.config import ConfigError
from sweeps.planning.trial import Trial
from sweeps.reporting.results import load_trials, read_sweep_meta, trial_checkpoints


@dataclass
class Pick:
    trial: Trial
    role: str  # "frontier" (closest to the matched level), "named" (--trials) or "seed baseline"
    checkpoint: Path


def final_checkpoint(trial: Trial) -> Path | None:
    """The trial's newest checkpoint file in the storage: Tune's ``checkpoint_NNNNNN/`` in the trial
    directory (a group member's part of it under its name), or None."""
    from e2e_sae.checkpoint import CHECKPOINT_FILE

    files = [p / CHECKPOINT_FILE for p in trial_checkpoints(trial) if (p / CHECKPOINT_FILE).is_file()]
    return files[-1] if files else None


def _nearest_level(view: dict[str, Any], by_id: dict[str | None, Trial]) -> list[tuple[Trial, str]]:
    """Per mode, the L0-frontier trial whose CE-loss increase is closest to the matched level."""
    level = view["matched"]["ce_loss_increase"]
    picks = []
    for m in view["modes"].values():
        front = m["frontiers"]["l0"]
        if not front or level is None:
            continue
        best = min(front, key=lambda p: (abs(p["metrics"]["ce_loss_increase"] - level), p["trial_id"]))
        picks.append((by_id[best["trial_id"]], "frontier"))
    return picks


def _frontier_picks(exp_dir: Path, trials: list[Trial]) -> list[tuple[Trial, str]]:
    """Per hook and mode, the L0-frontier trial whose CE-loss increase is closest to the matched
    level; then, for each, the finished trial of the same hook, mode and dictionary ratio with another
    seed whose CE-loss increase is closest to it (the seed baseline), if any."""
    from sweeps.reporting.report import compute_pareto, hook_views

    doc = compute_pareto(trials, read_sweep_meta(exp_dir, trials))
    by_id = {t.trial_id: t for t in trials}
    picks: list[tuple[Trial, str]] = []
    for h in doc["hooks"].values():
        for _, view in hook_views(h):  # per architecture in a sweep of several
            picks += _nearest_level(view, by_id)
    for t, _ in list(picks):
        others = [
            o
            for o in trials
            if o.state == "finished"
            and (o.hook, o.series, o.architecture, o.dict_size_to_input_ratio)
            == (t.hook, t.series, t.architecture, t.dict_size_to_input_ratio)
            and o.seed != t.seed
        ]
        ce = _ce(t)
        if others:
            picks.append((min(others, key=lambda o: (abs(_ce(o) - ce), o.trial_id)), "seed baseline"))
    return picks


def _ce(t: Trial) -> float:
    v = t.metrics.get("ce_loss_increase")
    return float(v) if isinstance(v, (int, float)) else math.inf


def select(exp_dir: Path, names: list[str] | None) -> list[Pick]:
    """The SAEs to analyse, each with its final checkpoint; one-line ConfigErrors for bad input."""
    trials = load_trials(exp_dir)
    finished = [t for t in trials if t.state == "finished"]
    if not finished:
        states = ", ".join(f"{t.trial_id} {t.state}" for t in trials[:5]) or "no trials at all"
        raise ConfigError(
            f"{exp_dir}: no finished trials to analyse ({states}); run or resume the sweep first "
            f"(python -m sweeps status {exp_dir})"
        )
    if names:
        by_id = {t.trial_id: t for t in trials}
        for name in names:
            if name not in by_id:
                known = ", ".join(str(t.trial_id) for t in finished[:4]) + (", ..." if len(finished) > 4 else "")
                raise ConfigError(f"--trials: no trial named {name} in {exp_dir}; finished trials there: {known}")
            if by_id[name].state != "finished":
                raise ConfigError(f"--trials: {name} is {by_id[name].state}, not finished; only finished SAEs")
        chosen = [(by_id[n], "named") for n in dict.fromkeys(names)]
    else:
        chosen = _frontier_picks(exp_dir, trials)
        if not chosen:
            raise ConfigError(
                f"{exp_dir}: no frontier trial to analyse (every finished trial is degenerate or lacks "
                "metrics); name trials with --trials"
            )
    picks = []
    for t, role in chosen:
        ckpt = final_checkpoint(t)
        if ckpt is None:
            raise ConfigError(
                f"trial {t.trial_id}: no checkpoint in {t.path} (checkpoint_*/); "
                "analyse needs the trained SAE: leave it out with --trials, or rerun the trial"
            )
        picks.append(Pick(t, role, ckpt))
    return picks
