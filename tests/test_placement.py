"""Where an experiment may live: the refusals decided before any trial starts (no Ray here; the
real `ray job submit` and two-node cases are in test_job_submit.py and test_multinode.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from ray_fixtures import REPO, ray_free_env
from sweep_fixtures import tiny_sweep, write_sweep

from e2e_sae.config import ConfigError
from sweeps.running.placement import (
    RAY_JOB_ENV_VAR,
    Placement,
    check_placement,
    growth_reason,
    job_placement,
    placement_problem,
    ray_up_max_workers,
)

JOB_ENV = {RAY_JOB_ENV_VAR: json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}})}


def test_a_single_local_node_keeps_every_local_path():
    laptop = Placement(ray_temp_dir="/tmp/ray", n_nodes=1)
    for path in ("./sweeps_results", "sweeps_results", "/data/results", "~/results", "file:///data/r"):
        assert placement_problem(path, laptop, shared=False) is None


def test_a_job_driver_refuses_a_relative_path_and_one_inside_its_package(tmp_path):
    pkg = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123"
    pkg.mkdir(parents=True)
    job = job_placement(JOB_ENV, cwd=str(pkg))
    assert job.job_working_dir == str(pkg) and job.job_package
    with pytest.raises(ConfigError) as err:
        check_placement("./sweeps_results", job, shared=False)
    line = str(err.value)
    assert line.startswith("storage_path: ./sweeps_results is relative") and "\n" not in line
    assert str(pkg / "sweeps_results") in line and "--set storage_path=s3://" in line
    assert "inside this Ray job's working directory" in placement_problem(str(pkg / "r"), job, shared=True)
    assert placement_problem("s3://bucket/sweeps", job, shared=False) is None
    assert placement_problem(str(tmp_path / "elsewhere"), job, shared=False) is None
    # a job without --working-dir (e.g. KubeRay's image): relative paths still land on the head
    bare = job_placement({RAY_JOB_ENV_VAR: "{}"}, cwd=str(tmp_path))
    assert not bare.job_package and "not your machine" in placement_problem("results", bare, shared=False)
    assert job_placement({}, cwd=str(pkg)).job_working_dir is None  # not a job: the user's own directory


def test_ray_temp_dir_is_refused_even_when_shared(tmp_path):
    facts = Placement(ray_temp_dir=str(tmp_path / "ray"), n_nodes=1)
    assert "Ray's temporary directory" in placement_problem(str(tmp_path / "ray" / "session_x" / "r"), facts, True)


def test_several_nodes_or_an_autoscaler_refuse_a_local_path_unless_shared():
    for facts, expected in (
        (Placement(n_nodes=2), "this Ray cluster has 2 nodes"),
        (
            Placement(n_nodes=1, growth="its autoscaler may add up to 8 worker nodes"),
            "its autoscaler may add up to 8 worker nodes",
        ),
    ):
        with pytest.raises(ConfigError) as err:
            check_placement("/data/results", facts, shared=False)
        line = str(err.value)
        assert expected in line and "--set storage_path=s3://" in line and "--set storage_shared=true" in line
        assert placement_problem("/data/results", facts, shared=True) is None
        assert placement_problem("gs://bucket/sweeps", facts, shared=False) is None
        with pytest.raises(ConfigError, match="^resume: experiment path .*--storage-shared"):
            check_placement("/data/results/x", facts, shared=False, resume=True)


def test_growth_is_read_from_the_ray_up_config_and_kuberay(tmp_path):
    for name in ("aws.yaml", "gcp.yaml"):  # the files `ray up` copies to ~/ray_bootstrap_config.yaml
        assert ray_up_max_workers(REPO / "cluster" / name) == 8
        assert "may add up to 8 worker nodes" in growth_reason({}, REPO / "cluster" / name)
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("max_workers: 0\nhead_node_type: head\navailable_node_types: {head: {max_workers: 0}}\n")
    assert growth_reason({}, fixed) is None and growth_reason({}, tmp_path / "absent.yaml") is None
    assert "KubeRay" in growth_reason({"RAY_USAGE_STATS_KUBERAY_IN_USE": "1"}, tmp_path / "absent.yaml")


@pytest.mark.slow
def test_run_prints_where_results_go_first_and_last(tmp_path):
    """A local sweep (one trial) says where its experiment is, with the commands, first and last."""
    spec = tiny_sweep(tmp_path, name="where", axes={"mode": ["local"], "layer": [1], "sparsity_coeff": [0.1]})
    path = write_sweep(tmp_path, spec)
    env = ray_free_env()
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps", "run", str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / "results" / "where"
    lines = proc.stdout.splitlines()
    first = lines.index(f"experiment: {exp}")
    assert lines[first + 1 : first + 4] == [f"  python -m sweeps {c} {exp}" for c in ("status", "report", "resume")]
    assert not any("Trial" in ln for ln in lines[:first])  # before Tune's own output
    assert lines[-1] == f"experiment: {exp}  (python -m sweeps status|report|resume {exp})"
    assert (exp / "report" / "report.md").is_file()
