"""The target search on real Ray Tune (no training, tests/tune_search_driver.py): a curve whose start
errors tries its start again, and after a resume the re-run errored trial's result reaches the search,
which ``status`` (from the trials on disk) agrees with."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
from ray_fixtures import REPO, ray_free_env

from sweeps.reporting.results import load_trials

pytestmark = pytest.mark.slow


def session(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "tune_search_driver.py"), *args],
        capture_output=True,
        text=True,
        env={**ray_free_env(), "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def saved_search(exp):
    """The searcher's state Tune saved in the experiment (its newest searcher-state file)."""
    (path,) = sorted(exp.glob("searcher-state-*.pkl"))[-1:]
    with open(path, "rb") as f:
        (curve,) = pickle.load(f)["curves"].values()
    return curve


def test_an_errored_start_is_retried_and_resume_brings_its_rerun_to_the_search(tmp_path):
    exp, flag = tmp_path / "search", tmp_path / "failing"
    flag.touch()
    session("run", str(exp), str(flag))
    trials = {t.trial_id: t for t in load_trials(exp)}
    assert trials["local_L1_r2_s1_seed0"].state == "errored"
    assert trials["local_L1_r2_s1_seed0_retry1"].state == "finished"  # the start, tried again
    curve = saved_search(exp)
    assert len(curve.failed) == 1 and all(g.is_met(t) for g in [curve] for t in curve.targets)

    flag.unlink()  # the error is gone: `sweeps resume` re-runs the errored trial under its Tune id
    session("resume", str(exp))
    trials = load_trials(exp)
    assert all(t.state == "finished" for t in trials) and len(trials) == curve.n_started
    resumed = saved_search(exp)
    assert not resumed.failed and not resumed.pending
    assert sorted(resumed.finished) == sorted(curve.finished + [(1.0, 150.0)])  # the re-run reached it
