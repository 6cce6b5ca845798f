"""Where an experiment lives: storage URIs, the experiment path, the names inside it, and the checks
that a sweep's results will outlive the driver and be reachable from every node.

An experiment is the directory ``<storage_path>/<name>`` (a local path or an ``s3://`` / ``gs://``
URI). Ray Tune writes its snapshot (``experiment_state-*.json``, ``tuner.pkl``) and one directory per
trial (``params.json``, ``result.json``, ``error.txt``, ``checkpoint_*/``; grouped members' W&B files
under ``<member>/``); ``sweeps run`` adds ``sweep.yaml`` (the validated spec, so ``resume`` and
``report`` need nothing else) and the report goes to ``report/``. The library's run directory of a
trial never reaches the storage (sweeps/running/trainable.py). The report reads only the files
``is_report_input`` names (docs/report.md).

Where the results may live is decided before any trial starts (``placement_problem``):

- under ``ray job submit`` the driver runs in the job's working directory, which Ray unpacks into
  its session directory and deletes with it: a relative ``storage_path`` (or one inside that
  directory or Ray's temp directory) would put the results there, so it is refused;
- on a cluster with more than one node, or one whose autoscaler may add nodes, a local path is
  only on the driver's machine: trials elsewhere cannot write there (Ray Tune fails at the first
  checkpoint, after the GPU time is spent), so it is refused unless the sweep states
  ``storage_shared: true`` (a filesystem every node mounts at that path: NFS, EFS, Filestore).

This module imports neither Ray nor pyarrow at import time (``plan`` stays light).
"""

from __future__ import annotations

import fnmatch
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e_sae.config import ConfigError
from e2e_sae.run_dir import METRICS_FILE

# ---- names inside an experiment -------------------------------------------------------------------

SWEEP_FILE = "sweep.yaml"  # written by `sweeps run`, next to Tune's files
TRIAL_FILES = ("params.json", "result.json", "error.txt")  # in each trial directory (Tune's)
TRIAL_CHECKPOINT_GLOB = "checkpoint_*"  # in each trial directory: the checkpoints Tune persisted
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"  # Tune's snapshot, for trials without a directory yet
REPORT_DIR = "report"  # <experiment>/report, or ./report/<name> for a remote experiment
ANALYSIS_DIR = "analysis"  # <experiment>/analysis: `sweeps analyse` (feature browser, decoder geometry)

# ---- storage URIs ---------------------------------------------------------------------------------


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def storage_uri(path: str) -> str:
    """A storage path as Tune, pyarrow and the report all use it: remote URIs unchanged; local paths
    (plain or ``file://``) absolute, with ``~`` expanded."""
    if is_remote(path):
        return path
    return str(Path(path.removeprefix("file://")).expanduser().resolve())


def join_storage(storage_path: str, name: str) -> str:
    root = storage_uri(storage_path)
    if is_remote(root):
        return root.rstrip("/") + "/" + name
    return str(Path(root) / name)


def experiment_path(storage_path: str, name: str) -> str:
    """Where Tune writes the experiment: ``<storage_path>/<name>`` (local paths made absolute)."""
    return join_storage(storage_path, name)


def filesystem(exp_path: str):
    """pyarrow filesystem and path for a local experiment path or an s3:// / gs:// URI."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(storage_uri(exp_path))


def is_report_input(name: str) -> bool:
    """Whether a file of this name, anywhere in an experiment directory, is one the report reads
    (a checkpoint's ``metrics.json``: a trial's final metrics when its result rows lost them)."""
    return (
        name in (SWEEP_FILE, METRICS_FILE)  # METRICS_FILE: in a trial's last checkpoint
        or name in TRIAL_FILES
        or fnmatch.fnmatchcase(name, EXPERIMENT_STATE_GLOB)
    )


def default_report_dir(exp_path: str, name: str) -> Path:
    """``<experiment>/report`` for a local experiment; ``./report/<name>`` for a remote one."""
    return Path(REPORT_DIR) / name if is_remote(exp_path) else Path(exp_path) / REPORT_DIR


def check_storage(storage_path: str) -> None:
    """A local path must be creatable and writable; a remote URI must answer."""
    if is_remote(storage_path):
        import pyarrow.fs

        try:
            fs, path = pyarrow.fs.FileSystem.from_uri(storage_path)
            fs.get_file_info(path)
        except Exception as err:  # noqa: BLE001 - any failure means unreachable
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(
                f"storage_path: cannot reach {storage_path} ({msg}); check the URI and credentials"
            ) from None
        return
    path = Path(storage_uri(storage_path))
    existing = path
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        tempfile.TemporaryFile(dir=existing).close()  # as root, os.access() says yes to everything
    except OSError as err:
        raise ConfigError(
            f"storage_path: {path} is not writable ({err.strerror or err}); choose another path"
        ) from None


# ---- the sweep file inside an experiment ---------------------------------------------------------


def write_sweep_file(exp_path: str, text: str) -> None:
    fs, root = filesystem(exp_path)
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/{SWEEP_FILE}") as f:
        f.write(text.encode())


def read_sweep_file(exp_path: str, shown: str | None = None) -> dict[str, Any]:
    """The mapping ``sweeps run`` saved; ``shown`` names the experiment in errors (default ``exp_path``)."""
    from e2e_sae.config import parse_yaml_mapping

    fs, root = filesystem(exp_path)
    if fs.get_file_info(f"{root}/{SWEEP_FILE}").type.name != "File":
        raise ConfigError(
            f"{shown or exp_path}: no {SWEEP_FILE}; is this an experiment directory written by sweeps run?"
        )
    with fs.open_input_stream(f"{root}/{SWEEP_FILE}") as f:
        text = f.read().decode()
    return parse_yaml_mapping(text, f"{shown or exp_path}/{SWEEP_FILE}", "sweep")


def local_copy(exp_path: str) -> str:
    """A remote experiment's report inputs (of the checkpoints, only their final metrics) copied to a
    temp dir; local paths as is."""
    if not is_remote(exp_path):
        return exp_path
    import pyarrow.fs

    fs, root = filesystem(exp_path)
    local = Path(tempfile.mkdtemp(prefix="sweep-report-")) / Path(root).name
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True)):
        if info.type == pyarrow.fs.FileType.File and is_report_input(info.base_name):
            target = local / Path(info.path).relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as src:
                target.write_bytes(src.read())
    return str(local)


def where_lines(exp_path: str) -> list[str]:
    """What a run prints first: the experiment and the commands that read or continue it."""
    commands = [f"  python -m sweeps {cmd} {exp_path}" for cmd in ("status", "report", "resume")]
    return [f"experiment: {exp_path}", *commands]


def where_line(exp_path: str) -> str:
    """What a run prints last."""
    return f"experiment: {exp_path}  (python -m sweeps status|report|resume {exp_path})"


# ---- will the results survive and be shared? -----------------------------------------------------

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
