"""Reading an experiment directory: its trials (params.json, result.json, error.txt, the final
metrics in their newest checkpoint, and Tune's experiment state for trials without a directory yet)
and the sweep's settings (sweep.yaml). A grouped Tune trial (sweeps/running/grouped_trial.py) is read as its
members, each a trial under its plan name. Everything read is what Tune persisted to the storage.

Works on a sweep another machine ran, one still running, or one that partly failed: a truncated
result line is skipped, a missing file is a missing value.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from e2e_sae.config import ConfigError
from e2e_sae.run_dir import METRICS_FILE
from sweeps.experiment import EXPERIMENT_STATE_GLOB, SWEEP_FILE, TRIAL_CHECKPOINT_GLOB, is_trial_dir
from sweeps.planning.spec import read_saved_sweep
from sweeps.planning.trial import Trial, is_group, members_of

# Keys Ray Tune adds to every result row; they are bookkeeping, not metrics.
TUNE_KEYS = frozenset(
    {
        "training_iteration",
        "trial_id",
        "timestamp",
        "done",
        "date",
        "time_this_iter_s",
        "time_total_s",
        "pid",
        "hostname",
        "node_ip",
        "time_since_restore",
        "iterations_since_restore",
        "checkpoint_dir_name",
        "config",
        "experiment_tag",
        "should_checkpoint",
        "timesteps_total",
        "episodes_total",
        "timesteps_since_restore",
        "experiment_id",
    }
)


def read_result_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a result.json; a truncated or corrupt line (a sweep still writing) is skipped."""
    if not path.is_file():
        return []
    rows = []
    lines = path.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                warnings.warn(f"{path}: line {i + 1} is not valid JSON; skipped")
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _load_trial_dir(path: Path) -> list[Trial]:
    """The trial of a Tune trial directory; a grouped trial's members, each a trial of its own."""
    params: dict[str, Any] = {}
    if (path / "params.json").is_file():
        try:
            params = json.loads((path / "params.json").read_text())
        except json.JSONDecodeError:
            warnings.warn(f"{path / 'params.json'} is not valid JSON; the trial's parameters are unknown")
    params = params if isinstance(params, dict) else {}
    rows = read_result_rows(path / "result.json")
    error = None
    if (path / "error.txt").is_file():
        lines = (path / "error.txt").read_text(errors="replace").strip().splitlines()
        error = lines[-1][:300] if lines else "error.txt is empty"
    if not is_group(params):
        trial = Trial.from_config(params, trial_id=path.name)
        trial.path = path
        trial = _settle(trial, _with_checkpoint_final(rows, trial), error)
        trial.wall_s = _seconds(trial.metrics.get("time_total_s")) if trial.state == "finished" else None
        return [trial]
    members = []
    group = members_of(params)
    for name, config in group:
        trial = Trial.from_config(config, trial_id=name)
        trial.path, trial.member = path, name
        entries = [r["members"].get(name) for r in rows if isinstance(r.get("members"), dict)]
        entries = [e for e in entries if isinstance(e, dict)]  # none in rows before it was reported
        own_error = next((str(e["error"])[:300] for e in reversed(entries) if "error" in e), None)
        entries = _with_checkpoint_final([e for e in entries if "error" not in e], trial)
        members.append(_settle(trial, entries, own_error or error))
        trial.wall_s = _member_seconds(rows, name, len(group)) if trial.state == "finished" else None
    return members


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _member_seconds(rows: list[dict[str, Any]], name: str, n_members: int) -> float | None:
    """A grouped member's share of its Tune trial's time: the group's ``time_total_s`` at the row that
    reported the member's final metrics, divided by the group's members (they train together, one
    clean pass for all; the member's own entry has no time of its own). None without such a row."""
    for row in rows:
        entry = row.get("members", {}).get(name) if isinstance(row.get("members"), dict) else None
        if isinstance(entry, dict) and entry.get("final") is True:
            seconds = _seconds(row.get("time_total_s"))
            return None if seconds is None else seconds / n_members
    return None


def trial_checkpoints(trial: Trial) -> list[Path]:
    """The trial's part of each checkpoint Tune persisted in its directory, oldest first:
    ``<trial dir>/checkpoint_NNNNNN/``, a group member's ``<group dir>/checkpoint_NNNNNN/<member>/``."""
    assert trial.path is not None
    return sorted(p / (trial.member or "") for p in trial.path.glob(TRIAL_CHECKPOINT_GLOB) if p.is_dir())


def _with_checkpoint_final(rows: list[dict[str, Any]], trial: Trial) -> list[dict[str, Any]]:
    """``rows``, plus the run's final metrics from its newest checkpoint (the library writes them into
    its last one) when they hold no final row: on a retry Ray copies result.json back from the storage
    copy of its last sync, which can miss rows reported since."""
    ckpts = trial_checkpoints(trial)
    path = ckpts[-1] / METRICS_FILE if ckpts else None  # the run's final metrics, in its last checkpoint
    if any(r.get("final") is True for r in rows) or path is None or not path.is_file():
        return rows
    try:
        final = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return rows
    return [*rows, final] if isinstance(final, dict) and final.get("final") is True else rows


def _settle(trial: Trial, rows: list[dict[str, Any]], error: str | None) -> Trial:
    """State and metrics from a trial's result rows and its error, if any."""
    finals = [r for r in rows if r.get("final") is True]
    trial.n_rows, trial.error = len(rows), error
    if finals:  # a final row wins over error.txt: its metrics are complete
        trial.state, trial.metrics = "finished", finals[-1]
    elif trial.error is not None:
        trial.state, trial.metrics = "errored", rows[-1] if rows else {}
    elif rows:
        trial.state, trial.metrics = "incomplete", rows[-1]
    return trial


def _trials_from_experiment_state(exp_dir: Path, seen: set[str]) -> list[Trial]:
    """Trials Ray Tune knows about but has not given a directory yet (pending in a running sweep),
    from the newest experiment_state-*.json. Only plain JSON is read (never the pickled fields)."""
    states = sorted(exp_dir.glob(EXPERIMENT_STATE_GLOB), key=lambda p: p.stat().st_mtime)
    if not states:
        return []
    try:
        trial_data = json.loads(states[-1].read_text())["trial_data"]
        out = []
        for entry in trial_data:
            state = json.loads(entry[0])
            trial_id = state.get("relative_logdir") or str(state["trial_id"])
            if trial_id in seen:
                continue
            config = state.get("config") if isinstance(state.get("config"), dict) else {}
            members = members_of(config) if is_group(config) else [(trial_id, config)]
            for name, member in members:
                trial = Trial.from_config(member, trial_id=name)
                if state.get("status") == "ERROR":
                    trial.state, trial.error = "errored", "Ray Tune marked the trial ERROR; it has no directory"
                out.append(trial)
        return out
    except (ValueError, KeyError, TypeError, IndexError) as e:
        warnings.warn(f"{states[-1]}: could not read the pending trials ({e}); only trial dirs are listed")
        return []


def load_trials(exp_dir: str | Path) -> list[Trial]:
    """Every trial of an experiment directory, sorted by trial id. A trial dir is a subdirectory
    holding params.json, result.json or error.txt; trials Tune has not started yet come from its
    experiment_state file."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise FileNotFoundError(
            f"experiment directory {exp_dir} does not exist; pass the sweep's <storage_path>/<name>"
        )
    dirs = [p for p in exp_dir.iterdir() if p.is_dir() and is_trial_dir(p)]
    trials = [t for p in dirs for t in _load_trial_dir(p)]  # a grouped trial's members are trials
    trials += _trials_from_experiment_state(exp_dir, {p.name for p in dirs})
    return sorted(trials, key=lambda t: t.trial_id or "")


def read_sweep_meta(exp_dir: Path, trials: list[Trial]) -> dict[str, Any]:
    """Sweep name, model and eval settings (eval_tokens, n_ctx: sorted distinct values), the report's
    ``match_at`` levels and a target search's targets, from the experiment's sweep.yaml (typed, as
    ``status`` and ``resume`` read it); without a readable one, from the directory and the trials."""
    saved = None
    if (exp_dir / SWEEP_FILE).is_file():
        try:
            saved = read_saved_sweep(str(exp_dir))
        except ConfigError as err:
            warnings.warn(f"{err}; using the trials' run configs")
    finished = [t for t in trials if t.state == "finished"]

    def distinct(key: str) -> list[Any]:
        return sorted({t.metrics[key] for t in finished if isinstance(t.metrics.get(key), (int, float))})

    spec = saved.spec if saved is not None else None
    targets = spec.search.targets or {} if spec is not None and spec.search.kind == "targets" else {}
    return {
        "sweep": spec.name if spec is not None else exp_dir.name,
        "model": (saved.model if saved is not None else None) or next((t.model for t in trials if t.model), None),
        "eval_tokens": distinct("eval_tokens"),
        "n_ctx": distinct("n_ctx"),
        "match_at": list(spec.report.match_at) if spec is not None else [],
        "search_targets": {k: sorted(float(v) for v in vs) for k, vs in targets.items()},
    }
