"""`ray job submit` of a sweep to a real local Ray head (loopback only, token authentication on)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ray_fixtures import RAY, REPO
from sweeps.report import load_trials
from sweep_fixtures import tiny_sweep, write_sweep

pytestmark = pytest.mark.slow


def test_ray_job_submit_runs_the_sweep_to_success(ray_head, tmp_path):
    address, env = ray_head
    path = write_sweep(tmp_path, tiny_sweep(tmp_path, name="submitted"))
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    refused = subprocess.run([RAY, "job", "list", "--address", address], env={**no_token, "HOME": str(tmp_path)},
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0  # the job server refuses a client without the token

    for _ in range(10):  # the head's job agent comes up a few seconds after the job server
        submit = subprocess.run(
            [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
             sys.executable, "-m", "sweeps", "run", str(path)],
            env=env, capture_output=True, text=True, timeout=400,
        )
        if "No available agent" not in submit.stdout + submit.stderr:
            break
        time.sleep(3)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "succeeded" in submit.stdout.lower()
    trials = load_trials(tmp_path / "results" / "submitted")
    assert [t.state for t in trials] == ["finished"] * 3
    assert (tmp_path / "results" / "submitted" / "report" / "report.md").is_file()
