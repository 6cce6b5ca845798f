"""`ray job submit` of a sweep to a real local Ray head (loopback only, token authentication on):
a sweep whose storage_path is relative is refused by its driver before any trial (the results
would land in the job's temporary working directory); one with an absolute path outside it runs
and leaves its results there. One head serves both tests (a head costs CI time)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_fixtures import RAY, REPO
from sweep_fixtures import tiny_sweep, write_sweep

from sweeps.reporting.results import load_trials

pytestmark = pytest.mark.slow


def _submit(address: str, env: dict[str, str], sweep_file: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + 180  # the head's job agent comes up after the job server (slowly under load)
    while True:
        submit = subprocess.run(
            [
                RAY,
                "job",
                "submit",
                "--address",
                address,
                "--working-dir",
                str(REPO),
                "--",
                sys.executable,
                "-m",
                "sweeps",
                "run",
                str(sweep_file),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if "No available agent" not in submit.stdout + submit.stderr or time.monotonic() > deadline:
            return submit
        time.sleep(3)


def test_ray_job_submit_runs_the_sweep_to_success(ray_head, tmp_path):
    address, env, _ = ray_head
    path = write_sweep(tmp_path, tiny_sweep(tmp_path, name="submitted"))
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    refused = subprocess.run(
        [RAY, "job", "list", "--address", address],
        env={**no_token, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0  # the job server refuses a client without the token

    submit = _submit(address, env, path)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "succeeded" in submit.stdout.lower()
    exp = tmp_path / "results" / "submitted"  # absolute, outside the job's working directory
    trials = load_trials(exp)
    assert [t.state for t in trials] == ["finished"] * 3
    assert (exp / "report" / "report.md").is_file()
    # the driver's log says where the results are and how to read or resume them
    assert f"experiment: {exp}  (python -m sweeps status|report|resume {exp})" in submit.stdout
    assert f"  python -m sweeps resume {exp}" in submit.stdout


def test_ray_job_submit_with_a_relative_storage_path_is_refused_before_any_trial(ray_head, tmp_path):
    address, env, ray_temp = ray_head
    path = write_sweep(tmp_path, tiny_sweep(tmp_path, name="lost", storage_path="./job_results"))
    start = time.monotonic()
    submit = _submit(address, env, path, timeout=200)
    elapsed = time.monotonic() - start
    out = submit.stdout + submit.stderr
    assert submit.returncode != 0 and "failed" in out.lower(), out[-3000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("error: ")]
    assert len(set(errors)) == 1, out[-3000:]  # `ray job submit` shows the driver's log twice on failure
    line = errors[0]
    assert line.startswith("error: storage_path: ./job_results is relative, so under this Ray job it resolves to ")
    assert "_ray_pkg_" in line and "--set storage_path=s3://" in line
    assert "Traceback" not in out and "Trial" not in out and "experiment: " not in out  # no trial started
    assert not list(Path(ray_temp).rglob("job_results")), "the refused driver wrote results"
    assert elapsed < 120, f"the refusal took {elapsed:.0f}s"
