"""Will a sweep's results survive the driver and be reachable from every node? Checked before any trial starts.

Where the results may live is decided before any trial starts (``placement_problem``):

- under ``ray job submit`` the driver runs in the job's working directory, which Ray unpacks into
  its session directory and deletes with it: a relative ``storage_path`` (or one inside that
  directory or Ray's temp directory) would put the results there, so it is refused;
- on a cluster with more than one node, or one whose autoscaler may add nodes, a local path is
  only on the driver's machine: trials elsewhere cannot write there (Ray Tune fails at the first
  checkpoint, after the GPU time is spent), so it is refused unless the sweep states
  ``storage_shared: true`` (a filesystem every node mounts at that path: NFS, EFS, Filestore).

This module imports Ray only inside the functions that ask the cluster (``plan`` stays light).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from e2e_sae.config import ConfigError
from sweeps.experiment import is_remote, storage_uri

# Ray's job supervisor sets this for the entrypoint it starts (and only then): the job's runtime env.
RAY_JOB_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"
# KubeRay sets this in every Ray container it creates (Ray's usage stats read it the same way).
KUBERAY_ENV_VAR = "RAY_USAGE_STATS_KUBERAY_IN_USE"
# `ray up` writes the autoscaler's config here on the head node (Ray's usage stats read it too).
RAY_UP_BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
REMOTE_FIX = "--set storage_path=s3://your-bucket/sweeps"


@dataclass
class Placement:
    """What the driver knows about where it runs. ``None``: not known (Ray not connected yet)."""

    job_working_dir: str | None = None  # the driver's directory when `ray job submit` started it
    job_package: bool = False  # that directory is Ray's unpacked copy of the job's --working-dir
    ray_temp_dir: str | None = None  # Ray's temp root (session directories, unpacked job packages)
    n_nodes: int | None = None  # alive nodes now
    growth: str | None = None  # why more nodes may join (an autoscaler), else None


def job_placement(environ: Mapping[str, str] = os.environ, cwd: str | None = None) -> Placement:
    """Before Ray starts: whether this process is a Ray job's driver, and its working directory."""
    if RAY_JOB_ENV_VAR not in environ:
        return Placement()
    try:
        runtime_env = json.loads(environ[RAY_JOB_ENV_VAR]).get("runtime_env") or {}
    except (ValueError, AttributeError):
        runtime_env = {}
    return Placement(
        job_working_dir=str(Path(cwd or os.getcwd()).resolve()), job_package=bool(runtime_env.get("working_dir"))
    )


def cluster_placement(environ: Mapping[str, str] = os.environ) -> Placement:
    """After ``ray.init``: the job facts plus Ray's temp dir, the node count and possible growth."""
    import ray

    facts = job_placement(environ)
    facts.n_nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    try:  # the session directory of the node this driver is attached to (private API: best effort)
        node = getattr(ray._private.worker, "_global_node", None)
        facts.ray_temp_dir = str(Path(node.get_session_dir_path()).resolve().parent) if node is not None else None
    except Exception:  # noqa: BLE001
        facts.ray_temp_dir = None
    facts.growth = growth_reason(environ, Path(RAY_UP_BOOTSTRAP_CONFIG).expanduser()) or _gcs_growth_reason()
    return facts


def growth_reason(environ: Mapping[str, str], bootstrap_config: Path) -> str | None:
    """Why the cluster this driver runs on may add nodes, from what the head node holds: a KubeRay
    pod (worker groups scale), or a `ray up` autoscaler config allowing worker nodes."""
    if KUBERAY_ENV_VAR in environ:
        return "this driver runs in a KubeRay pod, whose worker groups can add nodes"
    max_workers = ray_up_max_workers(bootstrap_config)
    if max_workers:
        return f"its autoscaler ({bootstrap_config}) may add up to {max_workers} worker nodes"
    return None


def ray_up_max_workers(config_path: Path) -> int:
    """Worker nodes a `ray up` cluster config allows (0 when the file is absent or allows none)."""
    import yaml

    try:
        config = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError):
        return 0
    if not isinstance(config, dict):
        return 0
    head = config.get("head_node_type")
    per_type = sum(
        int(t.get("max_workers", 0) or 0)
        for name, t in (config.get("available_node_types") or {}).items()
        if name != head and isinstance(t, dict)
    )
    top = int(config.get("max_workers", 0) or 0)
    return min(top, per_type) if top and per_type else max(top, per_type)


def _gcs_growth_reason() -> str | None:
    """The node groups an autoscaler reported to the GCS, where one does (private API: best effort)."""
    try:
        import ray

        config = ray._private.state.state.get_cluster_config()
        if config is None:
            return None
        counts = [g.max_count for g in config.node_group_configs]
    except Exception:  # noqa: BLE001
        return None
    if any(c == -1 for c in counts) or sum(counts) > 1:
        return "its autoscaler's node groups may add nodes"
    return None


def placement_problem(raw_path: str, facts: Placement, shared: bool) -> str | None:
    """Why results written to ``raw_path`` (as the user gave it) would not survive or not be seen by
    every node, or None. ``shared``: the user states a local path is mounted on every node."""
    if is_remote(raw_path):
        return None
    local = Path(storage_uri(raw_path))
    if facts.job_working_dir is not None:
        where = (
            "Ray's unpacked copy of the job's --working-dir, deleted with the job's files"
            if facts.job_package
            else "the directory the job server started the driver in, on the head node, not your machine"
        )
        given = Path(raw_path.removeprefix("file://")).expanduser()
        if not given.is_absolute():
            resolved = Path(facts.job_working_dir, given).resolve()
            return f"{raw_path} is relative, so under this Ray job it resolves to {resolved}, in {where}"
        if facts.job_package and local.is_relative_to(facts.job_working_dir):
            return (
                f"{local} is inside this Ray job's working directory {facts.job_working_dir}, "
                f"which Ray deletes with the job's files"
            )
    if facts.ray_temp_dir is not None and local.is_relative_to(facts.ray_temp_dir):
        return f"{local} is inside Ray's temporary directory {facts.ray_temp_dir}, which Ray deletes"
    if shared:
        return None
    if facts.n_nodes is not None and facts.n_nodes > 1:
        return (
            f"{local} is a local path, but this Ray cluster has {facts.n_nodes} nodes: trials on "
            f"the others cannot write their checkpoints there"
        )
    if facts.growth is not None:
        return (
            f"{local} is a local path, but {facts.growth}: trials on those nodes cannot write their checkpoints there"
        )
    return None


def check_placement(raw_path: str, facts: Placement, shared: bool, resume: bool = False) -> None:
    """``placement_problem`` as a one-line ConfigError with the fix (``run``: --set; ``resume``: a
    URI or --storage-shared)."""
    problem = placement_problem(raw_path, facts, shared)
    if problem is None:
        return
    is_multi_node = "local path, but" in problem
    if resume:
        fix = "resume the experiment from the s3:// or gs:// URI it was run with, or from an absolute path"
        if is_multi_node:
            fix += ", or pass --storage-shared if this path is a filesystem every node mounts"
        raise ConfigError(f"resume: experiment path {problem}; {fix}")
    fix = f"write results where every node and you can reach them: {REMOTE_FIX}"
    if is_multi_node:
        fix += " (or --set storage_shared=true if this path is a filesystem every node mounts: NFS, EFS, Filestore)"
    else:
        fix += " (or an absolute path outside the job's directory on a disk that outlives it)"
    raise ConfigError(f"storage_path: {problem}; {fix}")
