"""One Tune trial = one ``e2e_sae`` run (or, with ``group_size`` > 1, one group of runs trained on
one clean pass: :mod:`sweeps.grouping`), driven through the library's reporter callback.

The trial reports every eval/checkpoint with ``tune.report`` (handing the library's checkpoint
directory to Tune, which persists it to the sweep's storage) and, when Tune restarts it after a
failure, resumes from ``tune.get_checkpoint()`` exactly where the checkpoint left off.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from e2e_sae.config import run_config_from_dict
from e2e_sae.train import train
from sweeps.grouping import run_group
from sweeps.layout import FAILED_RUN_PREFIX, RESUME_FROM_DIR, TRIAL_RUN_DIR
from sweeps.trial import is_group

AfterReport = Callable[[dict[str, Any], "Path | None"], None]

WANDB_SERVICE_ENV = "WANDB_SERVICE"  # wandb.env.SERVICE: where a process finds its W&B service
# Ray's workers inherit the environment of the process that started Ray (the sweep's driver, a
# notebook, a shell); if that process had used wandb, this points every trial at its W&B service.
_INHERITED_WANDB_SERVICE = os.environ.get(WANDB_SERVICE_ENV)


def use_own_wandb_service() -> None:
    """Give this trial process a W&B service of its own (started by its first ``wandb.init``) instead
    of one inherited from the process that started Ray. An inherited service outlives a trial that is
    killed, still holds the trial's W&B runs open, and refuses the retry's resumed run ("run ID ... is
    in use"): the retry would error although its checkpoint is fine."""
    if os.environ.get(WANDB_SERVICE_ENV) == _INHERITED_WANDB_SERVICE:
        os.environ.pop(WANDB_SERVICE_ENV, None)


def run_trial(config: dict[str, Any], after_report: AfterReport | None = None) -> None:
    """Tune function trainable. ``config``: a :class:`sweeps.trial.Trial`'s ``tune_config()``, or a
    grouped trial's (:func:`sweeps.trial.group_config`: its members train as one group).

    ``after_report(metrics, checkpoint_dir)`` runs after each ``tune.report``, for a trainable that
    wraps this one (the fault-tolerance tests kill the trial there, once a checkpoint is persisted)."""
    use_own_wandb_service()
    ctx = tune.get_context()
    trial_dir = Path(ctx.get_trial_dir())
    cpus = ctx.get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))

    output_dir = trial_dir / TRIAL_RUN_DIR
    resume_from = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        resume_from = output_dir / RESUME_FROM_DIR
        if is_group(config):  # a group's checkpoint is a directory per member: never mix two
            shutil.rmtree(resume_from, ignore_errors=True)
        checkpoint.to_directory(str(resume_from))
    elif output_dir.exists():  # a retry that crashed before its first checkpoint: keep, start afresh
        output_dir.rename(trial_dir / f"{FAILED_RUN_PREFIX}{int(time.time())}")
    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, Any], ckpt_dir: Path | None) -> None:
        row = {**metrics, "node_id": node_id}
        if ckpt_dir is None:
            tune.report(row)
        else:
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(str(ckpt_dir)))
        if after_report is not None:
            after_report(metrics, ckpt_dir)

    if is_group(config):
        run_group(config, output_dir, resume_from, ctx.get_trial_id(), report)
        return
    cfg = run_config_from_dict(config["run"], {"output_dir": str(output_dir)})
    train(cfg, resume_from=resume_from, reporter=report, progress=False)
