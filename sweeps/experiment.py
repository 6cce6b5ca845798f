"""Where an experiment lives: storage URIs, the experiment path, the names inside it, and whether the
storage can be written.

An experiment is the directory ``<storage_path>/<name>`` (a local path or an ``s3://`` / ``gs://``
URI). Ray Tune writes its snapshot (``experiment_state-*.json``, ``tuner.pkl``) and one directory per
trial (``params.json``, ``result.json``, ``error.txt``, ``checkpoint_*/``; grouped members' W&B files
under ``<member>/``); ``sweeps run`` adds ``sweep.yaml`` (the validated spec, so ``resume`` and
``report`` need nothing else) and the report goes to ``report/``. The library's run directory of a
trial never reaches the storage (sweeps/running/trainable.py). The report reads only the files
``is_report_input`` names (docs/report.md).

Where the results may live on a cluster (the driver's job directory, several nodes) is
:mod:`sweeps.running.placement`'s question.

This module imports neither Ray nor pyarrow at import time (``plan`` stays light).
"""

from __future__ import annotations

import fnmatch
import tempfile
from pathlib import Path
from typing import Any

from e2e_sae.config import ConfigError
from e2e_sae.run_dir import CHECKPOINT_FILE, METRICS_FILE, RunDir
from e2e_sae.sae_source import SWEEP_CHECKPOINT_GLOB

# ---- names inside an experiment -------------------------------------------------------------------

SWEEP_FILE = "sweep.yaml"  # written by `sweeps run`, next to Tune's files
TRIAL_FILES = ("params.json", "result.json", "error.txt")  # in each trial directory (Tune's)
# in each trial directory: the checkpoints Tune persisted (a contract with e2e_sae/sae_source.py, which finds
# a trial's SAE, a grouped member's by name, from these files alone)
TRIAL_CHECKPOINT_GLOB = SWEEP_CHECKPOINT_GLOB
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"  # Tune's snapshot, for trials without a directory yet
REPORT_DIR = "report"  # <experiment>/report, or ./report/<name> for a remote experiment
ANALYSIS_DIR = "analysis"  # <experiment>/analysis: `sweeps analyse` (feature browser, decoder geometry)
ANALYSIS_GEOMETRY_MD = "geometry.md"  # the decoder geometry as markdown: analyse writes it, the report embeds it

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


# What every command that reads an experiment is given (errors say it).
TAKES_EXPERIMENT = "sweeps commands take an experiment directory (the path `sweeps run` printed: <storage_path>/<name>)"


def is_trial_dir(path: Path) -> bool:
    """A Tune trial directory: it holds one of Tune's per-trial files."""
    return any((path / f).is_file() for f in TRIAL_FILES)


def is_experiment_dir(path: Path) -> bool:
    """A local directory is an experiment when it holds ``sweep.yaml``, Tune's experiment state or a
    trial directory (a Tune experiment not started by ``sweeps run`` has no sweep.yaml)."""
    return (
        (path / SWEEP_FILE).is_file()
        or any(path.glob(EXPERIMENT_STATE_GLOB))
        or any(p.is_dir() and is_trial_dir(p) for p in path.iterdir())
    )


def check_experiment(path: str | Path, shown: str | None = None) -> None:
    """ConfigError, one line naming what was passed and what was expected, unless the local directory
    ``path`` is an experiment (:func:`is_experiment_dir`); ``shown`` names it in the error (a remote
    experiment's local copy). Every command that reads an experiment calls this before it writes."""
    p, name = Path(path), shown or str(path)
    if not p.exists():
        raise ConfigError(f"{name} does not exist; {TAKES_EXPERIMENT}")
    if not p.is_dir():
        raise ConfigError(f"{name} is a file; {TAKES_EXPERIMENT}")
    if is_experiment_dir(p):
        return
    run = RunDir(p)
    if run.config.is_file() or run.checkpoints.is_dir() or (p / CHECKPOINT_FILE).is_file():
        what = "a single run's checkpoint" if (p / CHECKPOINT_FILE).is_file() else "a single run's output directory"
        raise ConfigError(
            f"{name} is {what}; {TAKES_EXPERIMENT}; a single run's SAE exports with python -m e2e_sae.export {name}"
        )
    if is_trial_dir(p):
        raise ConfigError(f"{name} is one trial's directory; {TAKES_EXPERIMENT}: its parent, {p.resolve().parent}")
    raise ConfigError(
        f"{name} is not an experiment directory (no {SWEEP_FILE}, Tune experiment state or trial directory); "
        f"{TAKES_EXPERIMENT}"
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
