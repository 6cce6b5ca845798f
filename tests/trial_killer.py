"""``python tests/trial_killer.py AT_SAMPLES MARKER run SWEEP.yaml``: ``python -m sweeps`` whose trials
SIGKILL their own process once, right after reporting a checkpoint at >= AT_SAMPLES samples.

Fault injection for the fault-tolerance tests, kept out of the package: the wrapper trainable is
defined here, in ``__main__``, so Ray pickles it by value and the workers need no import of the
tests directory. ``MARKER`` is created by the kill (O_EXCL), so only one trial process dies and
Tune's retry of that trial runs to the end.
"""

from __future__ import annotations

import os
import signal
import sys

import sweeps.trainable
from sweeps.cli import main
from sweeps.trainable import run_trial as package_run_trial

KILL_AT_SAMPLES = int(sys.argv[1])
KILL_MARKER = sys.argv[2]


def kill_once_after_checkpoint(metrics, ckpt_dir) -> None:
    if ckpt_dir is None or int(metrics["n_samples"]) < KILL_AT_SAMPLES:
        return
    try:
        fd = os.open(KILL_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def run_trial(config) -> None:
    """The package's trainable with the kill after its reports."""
    package_run_trial(config, after_report=kill_once_after_checkpoint)


sweeps.trainable.run_trial = run_trial  # what `sweeps.cli` hands to Tune
sys.exit(main(sys.argv[3:]))
