"""A grouped Tune trial running (``group_size: K`` in the sweep file; planned by
:func:`sweeps.planning.plan.plan_groups`): up to K planned trials that differ only in the
fields members of a library group may differ in (:data:`e2e_sae.group.MEMBER_FIELDS`: seed, dict
ratio, sparsity coefficient, k, lr; the sample order, ``data.seed`` resolved, shared) run as ONE Tune
trial, K SAEs on one clean forward pass (:func:`e2e_sae.group.train_group`).

Tune schedules, retries and checkpoints the group (``resources_per_trial`` is per group); users see
members: each step's report is one Tune result row ``{"n_samples", "final", "members": {name:
metrics or {"error": ...}}}`` that :mod:`sweeps.reporting.results` splits into one trial per member, under
the name ``plan`` prints; the row's checkpoint directory holds every member's checkpoint directory
under ``<name>/`` (as the library writes it, :mod:`e2e_sae.run_dir`; for a member stopped by a
non-finite loss, the library's mark of that), so a retried group resumes every member from it, and
from it alone. Persisted as ``<group dir>/checkpoint_NNNNNN/<name>/``, that layout is what
:mod:`e2e_sae.sae_source` reads to find a member by ``EXPERIMENT/<name>`` (export, evaluate,
fine-tune parents): change one, change both (tests/test_sae_source.py).
Each member writes ``<run dir>/<name>/`` (a single run's layout; the trainable's
scratch directory) and, with W&B on, logs a W&B run of its own, its local files in
``<wandb dir>/<name>/`` (the trial's artifacts, which Tune copies to ``<trial>/<name>/``).

Ray-free: the trainable (:mod:`sweeps.running.trainable`) passes ``send(row, checkpoint_dir)``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e_sae.config import RunConfig, run_config_from_dict
from e2e_sae.group import GroupMember, GroupSpec, check_members, train_group
from e2e_sae.loop import Reporter, Run
from e2e_sae.run_dir import RunDir, checkpoint_dir_name
from sweeps.planning.trial import members_of

Send = Callable[[dict[str, Any], "Path | None"], None]
STAGING_DIR = ".tune_checkpoint"  # in the group's run dir: the checkpoint handed to Tune, then removed


def member_run_configs(
    config: dict[str, Any], run_dir: Path, trial_id: str = "plan", wandb_dir: Path | None = None
) -> tuple[GroupSpec, list[RunConfig]]:
    """A grouped trial's library group: spec and member run configs (``output_dir``
    ``<run_dir>/<member name>``; with W&B on, a W&B run per member named as the member, in the
    sweep's group, its id ``<Tune trial id>_m<i>`` stable across retries and resumes, its local
    files in ``<wandb_dir>/<member name>`` when given). Checked as the library checks a group
    (members differing in a shared field are refused)."""
    entries = members_of(config)
    names = [name for name, _ in entries]
    wandb = config.get("wandb") or {}
    cfgs = []
    for i, (name, member) in enumerate(entries):
        over: dict[str, Any] = {"output_dir": str(Path(run_dir) / name)}
        if wandb.get("mode", "disabled") != "disabled":
            over.update({f"wandb.{k}": v for k, v in wandb.items()})
            over.update({"wandb.name": name, "wandb.id": f"{trial_id}_m{i}"})
            if wandb_dir is not None:
                over["wandb.dir"] = str(Path(wandb_dir) / name)
        cfgs.append(run_config_from_dict(member["run"], over))
    check_members(cfgs, names)
    return GroupSpec(members=[GroupMember(name=n) for n in names]), cfgs


class GroupReport:
    """Collects the members' reports of one step and sends them as one row with one checkpoint
    directory (every live member's checkpoint, hard-linked into ``staging``; removed once sent:
    Tune has copied it to the experiment's storage by then)."""

    def __init__(self, names: list[str], staging: Path, send: Send):
        self.names, self.staging, self.send = names, Path(staging), send
        self.pending: dict[str, tuple[dict[str, Any], Path | None]] = {}
        self.errors: dict[str, str] = {}
        self.sent_final = False

    def reporter(self, name: str) -> Reporter:
        def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
            self.pending[name] = (metrics, checkpoint_dir)

        return report

    def flush(self, runs: list[Run], force: bool = False) -> None:
        """Send the step's row (the library's ``after_reports``); ``force``: even with no report
        pending (a group whose members all diverged still ends with a final row)."""
        for name, run in zip(self.names, runs, strict=True):
            if run.error is not None:
                self.errors[name] = run.error
        if not self.pending and not force:
            return
        members: dict[str, Any] = {n: m for n, (m, _) in self.pending.items()}
        members.update({n: {"error": e} for n, e in self.errors.items()})
        done = all(n in self.errors or members.get(n, {}).get("final") is True for n in self.names)
        n_samples = max([m["n_samples"] for m, _ in self.pending.values()] or [r.n_samples for r in runs])
        row = {"n_samples": n_samples, "final": done, "members": {n: members[n] for n in self.names if n in members}}
        checkpoints = {n: c for n, (_, c) in self.pending.items() if c is not None}
        staged = self._stage(n_samples, checkpoints) if checkpoints else None
        self.pending = {}
        self.send(row, staged)
        self.sent_final = done
        if staged is not None:
            shutil.rmtree(self.staging, ignore_errors=True)

    def _stage(self, n_samples: int, checkpoints: dict[str, Path]) -> Path:
        shutil.rmtree(self.staging, ignore_errors=True)
        root = self.staging / checkpoint_dir_name(n_samples)
        for name, src in checkpoints.items():
            shutil.copytree(src, root / name, copy_function=_link_or_copy)
        for name, error in self.errors.items():
            RunDir(root / name).write_diverged(error)
        return root


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def run_group(
    config: dict[str, Any],
    run_dir: Path,
    resume_from: Path | None,
    trial_id: str,
    send: Send,
    wandb_dir: Path | None = None,
) -> list[Run]:
    """Train a grouped trial's members; every step's reports go out through ``send`` as one row.
    ``resume_from``: a group checkpoint; each member continues from its part of it (``<name>/``)."""
    spec, cfgs = member_run_configs(config, run_dir, trial_id, wandb_dir)
    names = [m.name for m in spec.members]
    report = GroupReport(names, Path(run_dir) / STAGING_DIR, send)
    runs = train_group(
        spec,
        cfgs,
        resume_from=[Path(resume_from) / n for n in names] if resume_from is not None else None,
        reporters=[report.reporter(n) for n in names],
        group_dir=Path(run_dir),
        progress=False,
        after_reports=report.flush,
    )
    if not report.sent_final:
        report.flush(runs, force=True)
    return runs
