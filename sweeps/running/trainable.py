"""One Tune trial = one ``e2e_sae`` run (or, with ``group_size`` > 1, one group of runs trained on
one clean pass: :mod:`sweeps.running.grouped_trial`), driven through the library's reporter callback.

What a trial leaves in the sweep's storage reaches it once, from whichever node ran it, through Tune:
every eval/checkpoint is a ``tune.report`` (the driver appends the row to ``result.json``; Tune copies
the library's checkpoint directory to ``<trial>/checkpoint_NNNNNN/``, the last one holding the final
metrics as ``metrics.json`` too). The library's own run directory (``config.yaml``, ``metrics.jsonl``,
its checkpoints) is scratch: a new temporary directory on the trial's node for every attempt,
deleted when the attempt ends. So no file is uploaded twice, and a retry (Tune restarting a failed
trial, or a resumed sweep restarting an unfinished one) starts from what the storage holds, never
from scratch files an earlier attempt left: the newest readable checkpoint persisted there (Tune's
own, or one persisted after Tune's last snapshot of the experiment: :mod:`sweeps.running.persisted`),
and resumes exactly where that checkpoint left off. Grouped members' W&B files are written to the trial's
working directory, which Tune copies to the trial's storage directory (``sync_artifacts``,
:func:`sweeps.running.tuner.run_config`).
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from e2e_sae.config import run_config_from_dict
from e2e_sae.train import train
from sweeps.planning.trial import is_group, members_of
from sweeps.running.grouped_trial import run_group
from sweeps.running.persisted import resume_point
from sweeps.running.stages import PARENT_DIR, fetch_parent

AfterReport = Callable[[dict[str, Any], "Path | None"], None]

WANDB_SERVICE_ENV = "WANDB_SERVICE"  # wandb.env.SERVICE: where a process finds its W&B service
# Ray's workers inherit the environment of the process that started Ray (the sweep's driver, a
# notebook, a shell); if that process had used wandb, this points every trial at its W&B service.
_INHERITED_WANDB_SERVICE = os.environ.get(WANDB_SERVICE_ENV)
RUN_DIR = "run"  # in an attempt's scratch directory: the library's output_dir
RESUME_FROM_DIR = "resume_from"  # in an attempt's scratch directory: the checkpoint Tune handed back


def use_own_wandb_service() -> None:
    """Give this trial process a W&B service of its own (started by its first ``wandb.init``) instead
    of one inherited from the process that started Ray. An inherited service outlives a trial that is
    killed, still holds the trial's W&B runs open, and refuses the retry's resumed run ("run ID ... is
    in use"): the retry would error although its checkpoint is fine."""
    if os.environ.get(WANDB_SERVICE_ENV) == _INHERITED_WANDB_SERVICE:
        os.environ.pop(WANDB_SERVICE_ENV, None)


class QuietExit(tune.Trainable):
    """Mixin of the trial's Tune trainable (``run_trial.__mixins__``): once Tune has cleaned the trial
    up, a SIGTERM ends the trial's process at once.

    Ray ends a finished trial's worker with SIGTERM, and Ray's handler raises SystemExit in whatever
    Python code the worker's main thread runs then: its exit, or a garbage collection. Inside a
    weakref callback CPython cannot raise, so a sweep whose trials all succeeded printed "Exception
    ignored in: <function WeakSet.__init__.<locals>._remove>" and a traceback ending in Ray's
    ``sigterm_handler``. After cleanup the trial's results, checkpoints and artifacts are persisted:
    nothing is left for Python to do, so the signal's default action (the process ends) is right."""

    def cleanup(self) -> None:
        try:
            super().cleanup()
        finally:
            if threading.current_thread() is threading.main_thread():  # where signal handlers live
                signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_trial(config: dict[str, Any], after_report: AfterReport | None = None) -> None:
    """Tune function trainable. ``config``: a :class:`sweeps.planning.trial.Trial`'s ``tune_config()``, or a
    grouped trial's (:func:`sweeps.planning.trial.group_config`: its members train as one group).

    ``after_report(metrics, checkpoint_dir)`` runs after each ``tune.report``, for a trainable that
    wraps this one (the fault-tolerance tests kill the trial there, once a checkpoint is persisted)."""
    use_own_wandb_service()
    ctx = tune.get_context()
    cpus = ctx.get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    node_id = ray.get_runtime_context().get_node_id()
    artifacts = Path.cwd()  # Tune starts a trial in its working directory on its node (RAY_CHDIR_TO_TRIAL_DIR)

    def report(metrics: dict[str, Any], ckpt_dir: Path | None) -> None:
        row = {**metrics, "node_id": node_id}
        if ckpt_dir is None:
            tune.report(row)
        else:
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(str(ckpt_dir)))
        if after_report is not None:
            after_report(metrics, ckpt_dir)

    with tempfile.TemporaryDirectory(prefix=f"{ctx.get_trial_name()}-", ignore_cleanup_errors=True) as scratch:
        output_dir = Path(scratch) / RUN_DIR
        members = [name for name, _ in members_of(config)] if is_group(config) else []
        resume_from = resume_point(ctx.get_storage(), tune.get_checkpoint(), Path(scratch) / RESUME_FROM_DIR, members)
        if is_group(config):
            run_group(config, output_dir, resume_from, ctx.get_trial_id(), report, wandb_dir=artifacts)
            return
        if isinstance(config.get("finetune"), dict):  # a fine-tune stage's trial: its parent from the storage
            config = fetch_parent(config, ctx.get_storage(), Path(scratch) / PARENT_DIR)
        cfg = run_config_from_dict(config["run"], {"output_dir": str(output_dir)})
        train(cfg, resume_from=resume_from, reporter=report, progress=False)


# Tune's wrap_function bases the trial's trainable class on a function's __mixins__ (its documented hook).
run_trial.__mixins__ = (QuietExit,)  # type: ignore[attr-defined]
