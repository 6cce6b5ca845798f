"""A tiny sweep on a tiny native model (shared by the sweep tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from conftest import TINY_MODEL, write_token_jsonl


def tiny_sweep(tmp: Path, **top: Any) -> dict[str, Any]:
    train = write_token_jsonl(tmp / "train.jsonl", 64, 16, TINY_MODEL["d_vocab"], seed=1)
    eval_ = write_token_jsonl(tmp / "eval.jsonl", 8, 16, TINY_MODEL["d_vocab"], seed=2)
    run = {
        "mode": "e2e", "output_dir": "set-by-the-trial", "model": {"native": dict(TINY_MODEL)},
        "data": {"train": {"name": str(train)}, "eval": {"name": str(eval_)}, "n_ctx": 16,
                 "n_eval_samples": 8, "eval_batch_size": 4},
        "sae": {"position": "blocks.1.hook_resid_pre", "dict_size_to_input_ratio": 2.0},
        "loss": {"sparsity": {"coeff": 0.1}},
        "train": {"n_samples": 64, "batch_size": 4, "effective_batch_size": 8, "lr": 1e-2},
    }
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
