"""Checkpoints that resume a run exactly, written atomically.

One checkpoint is a directory ``<output_dir>/checkpoints/samples_<n>/`` holding ``checkpoint.pt``:
SAE, optimizer and scheduler state, step and sample count, data-stream position, RNG states and
activation-frequency counters -- everything the next step depends on. The file is written to a temp
name and renamed, so a crash mid-write never leaves a half checkpoint; a directory is handed to the
caller (e.g. Ray Tune) only once complete. Loading uses ``torch.load(weights_only=True)``.

The run's last checkpoint also holds ``metrics.json``, its final evaluation (the same file as the
run's own ``<output_dir>/metrics.json``): whoever keeps the checkpoint keeps the run's result with it
(a sweep keeps only what Tune persisted: its checkpoints and result rows).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from e2e_sae.run_dir import CHECKPOINT_FILE, METRICS_FILE, RunDir, checkpoint_dir_name, is_checkpoint_dir_name


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])  # a "python" entry from older checkpoints is ignored: nothing uses it
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    checkpoints_dir: Path, n_samples: int, state: dict[str, Any], keep: int, final: dict[str, Any] | None = None
) -> Path:
    """Write ``state`` as ``checkpoints_dir/samples_<n>/checkpoint.pt`` (and ``final``, the run's final
    metrics, as ``metrics.json`` beside it); keep the newest ``keep``."""
    ckpt_dir = checkpoints_dir / checkpoint_dir_name(n_samples)
    tmp_dir = checkpoints_dir / f".tmp_{checkpoint_dir_name(n_samples)}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    torch.save(state, tmp_dir / CHECKPOINT_FILE)
    if final is not None:
        (tmp_dir / METRICS_FILE).write_text(json.dumps(final, indent=2))
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    os.replace(tmp_dir, ckpt_dir)
    for old in list_checkpoints(checkpoints_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return ckpt_dir


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    return sorted(
        p for p in checkpoints_dir.iterdir() if is_checkpoint_dir_name(p.name) and (p / CHECKPOINT_FILE).is_file()
    )


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint of the run in ``output_dir``, or None."""
    ckpts = list_checkpoints(RunDir(output_dir).checkpoints)
    return ckpts[-1] if ckpts else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint directory or file (``weights_only=True``: tensors and plain data only)."""
    path = Path(path)
    file = path / CHECKPOINT_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (expected {CHECKPOINT_FILE} in a checkpoint directory)")
    return torch.load(file, map_location="cpu", weights_only=True)
