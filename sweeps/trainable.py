"""One Tune trial = one ``e2e_sae`` run, driven through the library's reporter callback.

The trial reports every eval/checkpoint with ``tune.report`` (handing the library's checkpoint
directory to Tune, which persists it to the sweep's storage) and, when Tune restarts it after a
failure, resumes from ``tune.get_checkpoint()`` exactly where the checkpoint left off.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from e2e_sae.config import run_config_from_dict
from e2e_sae.train import train
from sweeps.layout import FAILED_RUN_PREFIX, RESUME_FROM_DIR, TRIAL_RUN_DIR

# Test hook (fault-tolerance tests only): after reporting a checkpoint at >= this many samples, the
# trial process SIGKILLs itself once -- once per marker file, so Tune's retry runs to the end.
KILL_AT_SAMPLES_ENV = "E2E_SAE_TEST_KILL_AT_SAMPLES"
KILL_MARKER_ENV = "E2E_SAE_TEST_KILL_MARKER"


def _maybe_kill_for_test(n_samples: int) -> None:
    at, marker = os.environ.get(KILL_AT_SAMPLES_ENV), os.environ.get(KILL_MARKER_ENV)
    if at is None or marker is None or n_samples < int(at):
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable. ``config``: the trial dict from ``sweeps.spec.expand_trials``."""
    ctx = tune.get_context()
    trial_dir = Path(ctx.get_trial_dir())
    cpus = ctx.get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))

    output_dir = trial_dir / TRIAL_RUN_DIR
    resume_from = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        resume_from = output_dir / RESUME_FROM_DIR
        checkpoint.to_directory(str(resume_from))
    elif output_dir.exists():  # a retry that crashed before its first checkpoint: keep, start afresh
        output_dir.rename(trial_dir / f"{FAILED_RUN_PREFIX}{int(time.time())}")
    cfg = run_config_from_dict(config["run"], {"output_dir": str(output_dir)})
    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, Any], ckpt_dir: Path | None) -> None:
        row = {**metrics, "node_id": node_id}
        if ckpt_dir is None:
            tune.report(row)
        else:
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(str(ckpt_dir)))
            _maybe_kill_for_test(int(metrics["n_samples"]))

    train(cfg, resume_from=resume_from, reporter=report, progress=False)
