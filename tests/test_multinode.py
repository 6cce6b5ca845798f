"""A multi-node rehearsal on one machine: two Ray nodes, token auth on, a sweep spread across both;
and a node lost mid-trial, the trial finishing on another node, the storage alone serving the report.

The `cluster` fixture (conftest.py, tests/ray_fixtures.py) starts a real head and a real second node
with `ray start`, the way a cluster launcher does, with the security settings of cluster/: token auth
(RAY_AUTH_MODE=token, the token in a file named by RAY_AUTH_TOKEN_PATH) and the dashboard/job server
bound to 127.0.0.1. Each node gets its
own short --temp-dir and its own process group, so teardown stops exactly these processes with
os.killpg. Never `ray stop` here: it kills every Ray process on the machine, other people's too.

Note: Ray maps --node-ip-address 127.0.0.1 to the machine's own address for node-to-node traffic,
so both nodes report the same IP; the tests tell nodes apart by Ray node id.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from analysis_fixtures import EVAL_LINES
from analysis_fixtures import tiny_run as analysis_run
from ray_fixtures import RAY_CLI, REPO, LocalCluster, growing_cluster, ray_free_env
from sweep_fixtures import tiny_sweep, write_sweep

from e2e_sae.config import run_config_from_dict
from e2e_sae.train import train
from sweeps.reporting.results import load_trials

pytestmark = pytest.mark.slow


def _run_driver(code: str, env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


NODE_PROBE = """
    import json, sys, time
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init(address=sys.argv[1] if len(sys.argv) > 1 else None, log_to_driver=False)
    deadline = time.time() + 60
    while True:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        if len(nodes) >= 2 or time.time() > deadline:
            break
        time.sleep(0.5)

    @ray.remote(num_cpus=1)
    def where():
        return ray.get_runtime_context().get_node_id()

    pinned = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
              for n in nodes]
    print("RESULT " + json.dumps({"nodes": sorted(n["NodeID"] for n in nodes),
                                  "ran_on": sorted(ray.get(pinned, timeout=60))}))
"""


def _probe_result(proc: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"driver failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def test_two_nodes_join_and_each_runs_a_pinned_task(cluster: LocalCluster):
    env = cluster.client_env(token="file")
    env["RAY_ADDRESS"] = cluster.gcs_address  # how `python -m sweeps run` on a cluster finds it
    result = _probe_result(_run_driver(NODE_PROBE, env))
    assert len(result["nodes"]) == 2, result
    assert result["ran_on"] == result["nodes"], "each task must run on the node it was pinned to"


def test_driver_without_the_token_is_refused(cluster: LocalCluster):
    refused = _run_driver(NODE_PROBE, cluster.client_env(token=None), cluster.gcs_address, timeout=90)
    assert refused.returncode != 0
    assert "RESULT" not in refused.stdout
    assert "AuthenticationError" in refused.stderr or "token" in refused.stderr.lower()


def _http_status(url: str, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_job_server_rejects_requests_without_a_valid_token(cluster: LocalCluster):
    jobs = f"{cluster.dashboard_url}/api/jobs/"
    assert _http_status(jobs) == 401
    assert _http_status(jobs, {"Authorization": "Bearer not-the-token"}) == 403
    assert _http_status(jobs, {"Authorization": f"Bearer {cluster.token}"}) == 200


def test_dashboard_listens_on_loopback_only(cluster: LocalCluster):
    port = int(cluster.dashboard_url.rsplit(":", 1)[1])
    other_ips = [ip for ip in _local_ipv4_addresses() if not ip.startswith("127.")]
    if not other_ips:
        pytest.skip("this machine has no non-loopback IPv4 address to probe")
    for ip in other_ips:
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((ip, port)) != 0, f"dashboard reachable on {ip}:{port}"


def _local_ipv4_addresses() -> list[str]:
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [tok for tok in out.split() if tok.count(".") == 3]


def _sweeps_offline(*args: str) -> subprocess.CompletedProcess:
    """``python -m sweeps ARGS`` with no Ray cluster reachable: what reads an experiment from storage alone."""
    return subprocess.run(
        [sys.executable, "-m", "sweeps", *args],
        env=ray_free_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _ray_job(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(RAY_CLI + ["job", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_ray_job_submit_needs_auth_mode_and_token_on_the_client(cluster: LocalCluster, tmp_path: Path):
    # The documented flow: `ray job submit --address http://127.0.0.1:8265 --working-dir . -- ...`
    (tmp_path / "probe.py").write_text(textwrap.dedent(NODE_PROBE))
    submit = [
        "submit",
        "--address",
        cluster.dashboard_url,
        "--working-dir",
        str(tmp_path),
        "--",
        sys.executable,
        "probe.py",
    ]

    # A token alone is not enough: without RAY_AUTH_MODE=token the client sends no header.
    no_mode = _ray_job(submit, cluster.client_env(mode=None, token="env"), timeout=90)
    assert no_mode.returncode != 0
    assert "Authentication" in no_mode.stdout + no_mode.stderr

    ok = _ray_job(submit, cluster.client_env(token="env"))
    assert ok.returncode == 0, f"{ok.stdout[-3000:]}\n{ok.stderr[-3000:]}"
    result = json.loads(ok.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert len(result["ran_on"]) == 2 and result["ran_on"] == result["nodes"]


# ---------------------------------------------------------------------------------------------
# The sweep across both nodes, driven exactly as on a cluster: `python -m sweeps run` with
# RAY_ADDRESS pointing at the head and the token in the environment.


def test_local_storage_on_two_nodes_is_refused_before_any_trial(cluster: LocalCluster, tmp_path: Path):
    # On a real cluster a local path exists on the driver's node only; Tune would fail at the first
    # checkpoint of a trial elsewhere, after its GPU time was spent. So the driver refuses up front.
    sweep_file = write_sweep(tmp_path, tiny_sweep(tmp_path, name="unshared"), "unshared.yaml")
    env = cluster.client_env(token="file")
    env["RAY_ADDRESS"] = cluster.gcs_address
    run = subprocess.run(
        [sys.executable, "-m", "sweeps", "run", str(sweep_file)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    error = [ln for ln in run.stderr.splitlines() if ln.startswith("error: ")]
    assert len(error) == 1 and "Traceback" not in run.stderr
    assert error[0].startswith(
        f"error: storage_path: {tmp_path / 'results'} is a local path, but this Ray cluster has 2 nodes"
    )
    assert "--set storage_path=s3://" in error[0] and "--set storage_shared=true" in error[0]
    assert not (tmp_path / "results" / "unshared").exists()  # nothing written, no trial started
    assert "experiment: " not in run.stdout


def test_sweep_spreads_trials_over_both_nodes_and_reports(cluster: LocalCluster, tmp_path: Path):
    # Four 1-CPU trials, two at a time, on two 1-CPU nodes: each node has to take trials.
    # storage_path is local: both nodes share this machine's filesystem, as an NFS mount would, and
    # the sweep says so (storage_shared), which lifts the multi-node refusal above.
    spec = tiny_sweep(
        tmp_path,
        name="multinode",
        max_concurrent_trials=2,
        max_failures=0,
        storage_shared=True,
        axes={"mode": ["local"], "layer": [1], "sparsity_coeff": [0.1, 0.3, 1.0, 3.0]},
        resources_per_trial={"cpu": 1, "gpu": 0},
    )
    # Trials reuse their worker process (Tune's reuse_actors): a trial that ended before the second
    # node's worker started would hand its worker the next trial, and that worker's start would be
    # cancelled. Trials of ~15 s (a worker starts in under 10 s, even on a loaded 2-core machine)
    # keep both workers busy.
    spec["run"]["train"]["n_samples"] = 6400
    spec["checkpoint_every_n_samples"] = 3200
    sweep_file = write_sweep(tmp_path, spec, "multinode.yaml")
    env = cluster.client_env(token="file")
    env["RAY_ADDRESS"] = cluster.gcs_address
    run = subprocess.run(
        [sys.executable, "-m", "sweeps", "run", str(sweep_file)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-5000:]}"

    exp = Path(spec["storage_path"]) / "multinode"
    results = sorted(exp.glob("*/result.json"))
    assert len(results) == 4, f"expected 4 trials under {exp}, found {results}"
    node_ids = set()
    for path in results:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        assert rows and rows[-1].get("final") is True, f"{path.parent.name} did not finish"
        node_ids.update(r["node_id"] for r in rows)
    assert len(node_ids) == 2, f"trials ran on {len(node_ids)} node(s), expected both: {node_ids}"

    # The report is made from the experiment directory alone, with no cluster.
    out = tmp_path / "report"
    report = _sweeps_offline("report", str(exp), "--out", str(out))
    assert report.returncode == 0, f"{report.stdout[-3000:]}\n{report.stderr[-3000:]}"
    for name in ("report.md", "pareto.json", "trials.csv"):
        assert (out / name).is_file(), f"report did not write {name}"


# ---------------------------------------------------------------------------------------------
# Node loss: a trial on a worker node that dies continues on another node from its last checkpoint,
# and the storage alone (every node's temp dir deleted) holds everything report and analyse read.


def _wait_for_line(path: Path, driver: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.endswith("\n"):
            return text
        assert driver.poll() is None, f"the sweep ended before its trial paused:\n{log.read_text()[-5000:]}"
        time.sleep(0.2)
    pytest.fail(f"no trial paused after its checkpoint in {timeout} s:\n{log.read_text()[-5000:]}")


def _gone(pid: int, timeout: float = 30) -> bool:
    """Whether the process ends within ``timeout`` (a zombie whose parent died with it counts as ended)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.2)
    return False


def _sweep_losing_its_node(sweep_file: Path, tmp_path: Path) -> tuple[str, Path]:
    """Run the sweep on a head without CPUs and worker node A; once the trial paused after its first
    checkpoint, SIGKILL A's process group (raylet, workers, agents) and add node B. Returns A's node
    id and the driver's log, after the cluster is stopped and every node's temp dir is deleted."""
    marker, log = tmp_path / "paused", tmp_path / "driver.log"
    with growing_cluster(head_cpus=0) as cluster:
        node_a = cluster.add_node(cpus=1)
        env = {**cluster.env, "RAY_ADDRESS": cluster.gcs_address}
        with log.open("w") as out:
            driver = subprocess.Popen(
                [sys.executable, str(REPO / "tests" / "trial_killer.py"), "pause", "32", str(marker)]
                + ["run", str(sweep_file)],
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            pid, node_a_id = _wait_for_line(marker, driver, log).split()
            cluster.kill_node(node_a)
            assert _gone(int(pid)), "the trial's worker outlived its node's process group"
            cluster.add_node(cpus=1)
            assert driver.wait(timeout=400) == 0, log.read_text()[-5000:]
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait()
        temp_dirs = [n.temp_dir for n in cluster.nodes]
    assert len(temp_dirs) == 3 and not any(Path(d).exists() for d in temp_dirs)  # every node's files are gone
    return node_a_id, log


def test_a_trial_on_a_lost_worker_node_finishes_on_another_and_storage_alone_serves_report_and_analyse(tmp_path):
    """The head has no CPUs, so the trial runs on worker node A; once its checkpoint at 32 samples is
    persisted, A's raylet and workers are SIGKILLed; node B joins; the trial finishes there from that
    checkpoint with an uninterrupted run's metrics. Each node has its own temp dir (and TMPDIR); the
    storage path is the one thing they share. With every temp dir deleted, report and analyse work."""
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("".join(json.dumps({"text": EVAL_LINES[i % 2] * 3}) + "\n" for i in range(12)))
    run = analysis_run(eval_file, "e2e", 0, 0.5)
    run["train"]["n_samples"] = 96
    spec = {
        "name": "nodeloss",
        "run": run,
        "axes": {"mode": ["e2e"], "layer": [1], "sparsity_coeff": [0.5]},
        "resources_per_trial": {"cpu": 1},
        "storage_path": str(tmp_path / "shared" / "results"),
        "storage_shared": True,
        "checkpoint_every_n_samples": 32,
        "max_failures": 1,
    }
    node_a_id, log = _sweep_losing_its_node(write_sweep(tmp_path, spec, "nodeloss.yaml"), tmp_path)
    exp = tmp_path / "shared" / "results" / "nodeloss"
    (trial,) = load_trials(exp)
    assert trial.state == "finished", (trial.state, trial.error, log.read_text()[-3000:])
    final = json.loads((trial.path / "result.json").read_text().splitlines()[-1])
    assert final["node_id"] != node_a_id  # it finished on node B ...
    # ... from the checkpoint at 32: training iterations 1 (32) before the loss, 2 (64) and 3 (96) after.
    assert (final["training_iteration"], final["iterations_since_restore"], final["n_samples"]) == (3, 2, 96)
    direct = train(run_config_from_dict(trial.run, {"output_dir": str(tmp_path / "direct")}), progress=False)
    for k in ("l0", "ce_loss_increase", "kl", "explained_variance", "alive_dict_elements", "n_samples"):
        assert trial.metrics[k] == pytest.approx(direct[k], rel=1e-6, abs=1e-9), k
    assert not list(exp.rglob("run"))  # the library's run directory never reached the storage

    report = _sweeps_offline("report", str(exp), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert trial.trial_id in (tmp_path / "report" / "trials.csv").read_text()
    analyse = _sweeps_offline("analyse", str(exp), "--trials", trial.trial_id, "--out", str(tmp_path / "an"))
    assert analyse.returncode == 0, analyse.stdout[-3000:] + analyse.stderr[-3000:]
    doc = json.loads((tmp_path / "an" / "analysis.json").read_text())
    assert [s["trial_id"] for s in doc["saes"]] == [trial.trial_id]
    assert doc["saes"][0]["checkpoint"] == str(sorted(trial.path.glob("checkpoint_*"))[-1] / "checkpoint.pt")
