"""Which SAEs ``sweeps analyse`` looks inside: per (hook, mode) the SAE on the mode's frontier closest to
the report's matched CE-loss increase (:func:`sweeps.reporting.report.compute_pareto`), every mode at
the same seed, plus another seed of the same mode as a baseline when the sweep has one; or the trials
``--trials`` names. Every pick's checkpoint is found here, before any model loads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

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


def _seed_order(seed: int | None) -> tuple[bool, int]:
    return (seed is None, seed if seed is not None else 0)


def _nearest(trials: list[Trial], level: float) -> Trial | None:
    """Of ``trials``' own L0 frontier, the trial whose CE-loss increase is closest to ``level``."""
    from sweeps.frontier import pareto_front

    points = [(_num(t, "l0"), _ce(t), t) for t in trials]
    front = pareto_front([p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])])
    return min((p.payload for p in front), key=lambda t: (abs(_ce(t) - level), t.trial_id), default=None)


def _at_one_seed(candidates: list[Trial], modes: list[str], level: float) -> list[tuple[Trial, str]]:
    """Per mode, the trial nearest ``level`` on that mode's frontier at ONE seed, the same for every
    mode: the seed at which the most modes have a frontier (the smallest such seed). SAEs of one seed
    share their initial decoder, so a cross-mode comparison that mixed seeds would mix the seed's
    effect into the mode's. A mode with no trial at that seed falls back to its smallest seed (the
    cross-mode table's "same seed" column then says no)."""
    by_seed: dict[int | None, dict[str, Trial]] = {}
    for seed in sorted({t.seed for t in candidates}, key=_seed_order):
        for mode in modes:
            best = _nearest([t for t in candidates if t.series == mode and t.seed == seed], level)
            if best is not None:
                by_seed.setdefault(seed, {})[mode] = best
    if not by_seed:
        return []
    chosen = min(by_seed, key=lambda s: (-len(by_seed[s]), _seed_order(s)))
    picks = []
    for mode in modes:
        at = by_seed[chosen].get(mode) or next((by_seed[s][mode] for s in by_seed if mode in by_seed[s]), None)
        if at is not None:
            picks.append((at, "frontier"))
    return picks


def _frontier_picks(exp_dir: Path, trials: list[Trial]) -> list[tuple[Trial, str]]:
    """Per hook (and architecture), the report's matched CE-loss increase, and per mode the trial
    nearest it at one seed for all modes (:func:`_at_one_seed`); then, for each, the finished trial of
    the same hook, mode and dictionary ratio with another seed whose CE-loss increase is closest to it
    (the seed baseline), if any."""
    from sweeps.frontier import degenerate_reason
    from sweeps.reporting.report import compute_pareto, hook_views

    doc = compute_pareto(trials, read_sweep_meta(exp_dir, trials))
    usable = [t for t in trials if t.state == "finished" and not degenerate_reason(t.metrics)]
    picks: list[tuple[Trial, str]] = []
    for hook, h in doc["hooks"].items():
        for arch, view in hook_views(h):  # per architecture in a sweep of several
            level = view["matched"]["ce_loss_increase"]
            modes = list(view["modes"])
            here = [t for t in usable if t.hook == hook and t.series in modes and arch in (None, t.architecture)]
            if level is not None:
                picks += _at_one_seed(here, modes, level)
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


def _num(t: Trial, key: str) -> float:
    v = t.metrics.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.inf


def _ce(t: Trial) -> float:
    return _num(t, "ce_loss_increase")


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
