"""``python tests/trial_killer.py kill|pause AT_SAMPLES MARKER run SWEEP.yaml``: ``python -m sweeps``
whose trials, once, right after reporting a checkpoint at >= AT_SAMPLES samples, SIGKILL their own
process (``kill``) or stop there until something else kills them (``pause``: a test then kills the
trial's whole node).

Fault injection for the fault-tolerance tests, kept out of the package: the wrapper trainable is
defined here, in ``__main__``, so Ray pickles it by value and the workers need no import of the
tests directory. ``MARKER`` is created by the first trial that gets there (O_EXCL), holding its pid and
Ray node id, so only one trial process dies and Tune's retry of that trial runs to the end.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import sweeps.running.trainable
from sweeps.cli import main
from sweeps.running.trainable import run_trial as package_run_trial

ACTION = sys.argv[1]
KILL_AT_SAMPLES = int(sys.argv[2])
KILL_MARKER = sys.argv[3]


def kill_once_after_checkpoint(metrics, ckpt_dir) -> None:
    if ckpt_dir is None or int(metrics["n_samples"]) < KILL_AT_SAMPLES:
        return
    try:
        fd = os.open(KILL_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    import ray

    os.write(fd, f"{os.getpid()} {ray.get_runtime_context().get_node_id()}\n".encode())  # who, where
    os.close(fd)
    if ACTION == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    while True:  # pause: the checkpoint is persisted; wait for the test to kill this node
        time.sleep(1)


def run_trial(config) -> None:
    """The package's trainable with the kill after its reports."""
    package_run_trial(config, after_report=kill_once_after_checkpoint)


run_trial.__mixins__ = package_run_trial.__mixins__  # the same trainable class as the package's
sweeps.running.trainable.run_trial = run_trial  # what `sweeps.running.tuner` hands to Tune
sys.exit(main(sys.argv[4:]))
