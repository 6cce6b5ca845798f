"""What both sides of a benchmark share: the phases, the tokens, the hardware record, the worker processes.

Our side (:mod:`e2e_sae.bench.throughput`) and the reference comparison (:mod:`e2e_sae.bench.reference`)
import this module and never each other.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from e2e_sae.config import RunConfig

PHASES = ("clean_forward", "spliced_forward", "backward", "optimizer", "bookkeeping")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def hardware(device: torch.device) -> dict[str, Any]:
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
    }


def bench_tokens(d_vocab: int, n_batches: int, batch_size: int, n_ctx: int, seed: int) -> torch.Tensor:
    """Seeded uniform random tokens ``[n_batches, batch, n_ctx]`` (the reference side gets the same)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, d_vocab, (n_batches, batch_size, n_ctx), generator=g)


def run_worker(cfg: RunConfig, workdir: Path, name: str, args: list[str]) -> subprocess.Popen:
    """Start ``python -m e2e_sae.bench`` on the resolved config in a fresh process."""
    cfg_path = workdir / "config.yaml"
    if not cfg_path.exists():
        cfg_path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    cmd = [sys.executable, "-m", "e2e_sae.bench", str(cfg_path), "--out", str(workdir / f"{name}.json"), *args]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish_worker(proc: subprocess.Popen, out: Path) -> dict[str, Any]:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed (exit {proc.returncode}):\n{err[-3000:]}")
    return json.loads(out.read_text())
