"""Ray processes the tests start, and their environment: one home for the cluster harnesses.

Each harness starts its nodes in their own process group and stops exactly those with os.killpg.
Never `ray stop` here: it kills every Ray process on the machine, other people's too. Fixtures that
use these live in conftest.py (`cluster`, `ray_head`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ray_free_env() -> dict[str, str]:
    """This process's environment without any pointer to a Ray cluster or its auth token, so a
    subprocess never joins someone else's Ray and only uses the auth settings a test gives it."""
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        env.pop(key, None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.setdefault("WANDB_MODE", "disabled")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # keep /dev/shm use small on a shared machine
START_TIMEOUT_S = 120


@dataclass
class LocalCluster:
    """Two `ray start` nodes on this machine; the fields a client needs to reach them."""

    gcs_address: str
    dashboard_url: str
    token: str
    token_path: Path
    process_groups: list[int] = field(default_factory=list)
    temp_dirs: list[str] = field(default_factory=list)

    def client_env(self, mode: str | None = "token", token: str | None = "file") -> dict[str, str]:
        """Environment for a client process. token: "file" (RAY_AUTH_TOKEN_PATH), "env"
        (RAY_AUTH_TOKEN), None (no token), or a literal wrong token."""
        env = ray_free_env()
        # A private HOME, so a ~/.ray/auth_token left by someone else on this machine never
        # stands in for the token under test.
        env["HOME"] = str(self.token_path.parent / "home")
        if mode is not None:
            env["RAY_AUTH_MODE"] = mode
        if token == "file":
            env["RAY_AUTH_TOKEN_PATH"] = str(self.token_path)
        elif token == "env":
            env["RAY_AUTH_TOKEN"] = self.token
        elif token is not None:
            env["RAY_AUTH_TOKEN"] = token
        return env


def _stop_process_groups(groups: list[int], grace_s: float = 5.0) -> None:
    """Stop the process groups we started, newest first (workers before the head, so each raylet
    can still say goodbye to the GCS): SIGTERM, wait up to grace_s, then SIGKILL what is left."""
    for pgid in reversed(groups):
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _ray_start(args: list[str], env: dict[str, str], groups: list[int]) -> str:
    """Run `ray start ARGS` in a new session; record its process group; return its output."""
    proc = subprocess.Popen(
        RAY_CLI + ["start", *args],
        env=env,
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    groups.append(proc.pid)  # session leader: its pid is the group id its daemons inherit
    try:
        out, _ = proc.communicate(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise RuntimeError(f"`ray start` did not return in {START_TIMEOUT_S}s:\n{out[-3000:]}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"`ray start {' '.join(args)}` failed:\n{out[-3000:]}")
    return out


@contextmanager
def two_node_cluster() -> Iterator[LocalCluster]:
    """A head and a second node started with `ray start`, token auth on, stopped on exit."""
    token_dir = Path(tempfile.mkdtemp(prefix="rtok", dir="/tmp"))
    (token_dir / "home").mkdir()
    token = secrets.token_hex(32)
    token_path = token_dir / "auth_token"
    token_path.write_text(token)
    token_path.chmod(0o600)

    gcs_port, dashboard_port = free_port(), free_port()
    head_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit
    worker_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    c = LocalCluster(
        gcs_address=f"127.0.0.1:{gcs_port}",
        dashboard_url=f"http://127.0.0.1:{dashboard_port}",
        token=token,
        token_path=token_path,
        temp_dirs=[head_dir, worker_dir, str(token_dir)],
    )
    node_env = ray_free_env()
    node_env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path), HOME=str(token_dir / "home"))
    common = [
        "--node-ip-address",
        "127.0.0.1",
        "--num-cpus",
        "1",
        "--num-gpus",
        "0",
        "--object-store-memory",
        str(OBJECT_STORE_BYTES),
        "--disable-usage-stats",
    ]
    try:
        _ray_start(
            [
                "--head",
                "--port",
                str(gcs_port),
                "--temp-dir",
                head_dir,
                "--dashboard-host",
                "127.0.0.1",
                "--dashboard-port",
                str(dashboard_port),
                "--ray-client-server-port",
                str(free_port()),
                "--dashboard-agent-listen-port",
                str(free_port()),
                *common,
            ],
            node_env,
            c.process_groups,
        )
        _ray_start(
            [
                "--address",
                c.gcs_address,
                "--temp-dir",
                worker_dir,
                "--dashboard-agent-listen-port",
                str(free_port()),
                *common,
            ],
            node_env,
            c.process_groups,
        )
        yield c
    finally:
        _stop_process_groups(c.process_groups)
        for d in c.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


def _agent_ports() -> list[str]:
    """Free ports for a node's agents, whose defaults are fixed numbers another Ray on this machine
    may hold."""
    return [
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]


@dataclass
class RayNode:
    pgid: int  # its process group: raylet, its workers and agents
    temp_dir: str


@dataclass
class GrowingCluster:
    """A head and worker nodes started with `ray start` (no auth), each in its own process group with
    its own --temp-dir and TMPDIR inside it, so the nodes share nothing but this machine's other paths.
    ``add_node`` joins a node (as an autoscaler would); ``kill_node`` SIGKILLs one (a lost node)."""

    gcs_address: str
    env: dict[str, str]
    nodes: list[RayNode] = field(default_factory=list)

    def start_node(self, args: list[str]) -> RayNode:
        temp_dir = tempfile.mkdtemp(prefix="rg", dir="/tmp")  # short: Ray's socket paths must fit
        env = {**self.env, "TMPDIR": str(Path(temp_dir, "tmp"))}
        Path(env["TMPDIR"]).mkdir()
        groups: list[int] = []
        node = RayNode(pgid=-1, temp_dir=temp_dir)
        self.nodes.append(node)
        try:
            _ray_start([*args, "--temp-dir", temp_dir, *_agent_ports()], env, groups)
        finally:
            node.pgid = groups[0] if groups else -1
        return node

    def add_node(self, cpus: int) -> RayNode:
        return self.start_node(["--address", self.gcs_address, "--num-cpus", str(cpus), *NODE_COMMON])

    def kill_node(self, node: RayNode) -> None:
        os.killpg(node.pgid, signal.SIGKILL)


NODE_COMMON = ["--node-ip-address", "127.0.0.1", "--num-gpus", "0", "--object-store-memory", str(OBJECT_STORE_BYTES)]
NODE_COMMON += ["--disable-usage-stats"]
# The head notices a lost node within seconds (defaults: about 30 s).
FAST_NODE_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}


@contextmanager
def growing_cluster(head_cpus: int = 0) -> Iterator[GrowingCluster]:
    """A head node (``head_cpus``: 0 keeps trials off it) that worker nodes join and leave; every node
    stopped and its temp dir deleted on exit."""
    port = free_port()
    # Auth off, said explicitly: with RAY_AUTH_MODE unset, a ~/.ray/auth_token that any local ray.init()
    # on this machine writes would turn token auth on for the head but not for the nodes joining it.
    env = {**ray_free_env(), **FAST_NODE_DEATH, "RAY_AUTH_MODE": "disabled"}
    c = GrowingCluster(gcs_address=f"127.0.0.1:{port}", env=env)
    try:
        c.start_node(
            [
                "--head",
                "--port",
                str(port),
                "--num-cpus",
                str(head_cpus),
                "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}",
                *NODE_COMMON,
            ]
        )
        yield c
    finally:
        _stop_process_groups([n.pgid for n in c.nodes if n.pgid > 0])
        for n in c.nodes:
            shutil.rmtree(n.temp_dir, ignore_errors=True)


RAY = str(Path(sys.executable).with_name("ray"))


@contextmanager
def token_head() -> Iterator[tuple[str, dict[str, str], str]]:
    """A Ray head on 127.0.0.1 with token auth, in its own process group: stopping it touches no
    other Ray on this machine (never `ray stop`, which ends every Ray process). Yields the dashboard
    address, the client environment and the head's temp dir (where job working dirs are unpacked)."""
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # Ray's socket paths must stay short
    port, dash = free_port(), free_port()
    env = ray_free_env()
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "WANDB_MODE": "disabled"})
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            "--num-cpus=2",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=true",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            probe = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True)
            if probe.returncode == 0:
                break
            time.sleep(1)
        else:
            raise RuntimeError("the Ray head did not come up")
        yield address, env, temp_dir
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
