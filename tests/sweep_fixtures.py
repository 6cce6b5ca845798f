"""A tiny sweep on a tiny native model (shared by the sweep tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from conftest import tiny_run, write_tiny_data

from sweeps.planning.trial import Trial


def tiny_sweep(tmp: Path, **top: Any) -> dict[str, Any]:
    run = tiny_run(write_tiny_data(tmp))
    spec = {
        "name": "tiny",
        "run": run,
        "axes": {"mode": ["local", "e2e"], "layer": [1], "sparsity_coeff": {"local": [0.1, 1.0], "e2e": [0.1]}},
        "resources_per_trial": {"cpu": 1},
        "storage_path": str(tmp / "results"),
        "checkpoint_every_n_samples": 32,
        "max_failures": 2,
    }
    spec.update(top)
    return spec


def write_sweep(tmp: Path, spec: dict[str, Any], name: str = "sweep.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(spec))
    return path


def trial_record(
    mode: str,
    coeff: float,
    *,
    hook: str = "blocks.1.hook_resid_pre",
    ratio: float = 2.0,
    seed: int = 0,
    run: dict[str, Any] | None = None,
    **fields: Any,
) -> Trial:
    """A trial as the report reads it back, its axis values in its run config (where a trial keeps them):
    ``run`` (a full run config) gets them set, else a minimal one holds only them."""
    run = dict(run or {})
    run.update(mode=mode, seed=seed)
    run["sae"] = {**run.get("sae", {}), "position": hook, "dict_size_to_input_ratio": ratio}
    run["loss"] = {**run.get("loss", {}), "sparsity": {**run.get("loss", {}).get("sparsity", {}), "coeff": coeff}}
    return Trial(run=run, **fields)
