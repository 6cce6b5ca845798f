"""A tiny sweep on a tiny native model (shared by the sweep tests)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import yaml

from conftest import tiny_run, write_tiny_data

REPO = Path(__file__).resolve().parents[1]


def ray_free_env() -> dict[str, str]:
    """This process's environment without any pointer to a Ray cluster or its auth token, so a
    subprocess never joins someone else's Ray and only uses the auth settings a test gives it."""
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                "RAY_AUTH_MODE"):
        env.pop(key, None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.setdefault("WANDB_MODE", "disabled")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_sweep(tmp: Path, **top: Any) -> dict[str, Any]:
    run = tiny_run(write_tiny_data(tmp))
    spec = {
        "name": "tiny", "run": run,
        "axes": {"mode": ["local", "e2e"], "layer": [1], "sparsity_coeff": {"local": [0.1, 1.0], "e2e": [0.1]}},
        "resources_per_trial": {"cpu": 1}, "storage_path": str(tmp / "results"),
        "checkpoint_every_n_samples": 32, "max_failures": 2,
    }
    spec.update(top)
    return spec


def write_sweep(tmp: Path, spec: dict[str, Any], name: str = "sweep.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(spec))
    return path
