"""SAELens (PyPI ``sae-lens``) in a venv of its own, for the architecture-equality tests.

SAELens 6 needs TransformerLens < 4 and this project runs on TransformerLens 4, so, like the
authors' reference (:mod:`e2e_sae.bench.reference`), it never enters this venv: ``setup_saelens``
builds ``DIR/venv`` with it and the same torch as ours, and ``saelens_worker.py`` runs there as a
subprocess. The worker builds SAELens's training SAE of an architecture from the weights and inputs
we hand it, runs its training forward pass and backward, and hands back the activations, the
reconstruction, every loss term and every gradient (tests/test_saelens.py compares them with ours).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from e2e_sae.bench.reference import reference_env, venv_python

SAELENS_VERSION = "6.54.0"
WORKER = Path(__file__).with_name("saelens_worker.py")


def saelens_python(saelens_dir: Path) -> Path:
    return venv_python(saelens_dir, "saelens")


def setup_saelens(saelens_dir: Path) -> Path:
    """Create ``saelens_dir/venv`` with sae-lens and the same torch as ours; check that it imports."""
    saelens_dir.mkdir(parents=True, exist_ok=True)
    venv = saelens_dir / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    torch_version = torch.__version__.split("+")[0]
    subprocess.run(
        [python, "-m", "pip", "install", "-q", f"torch=={torch_version}", f"sae-lens=={SAELENS_VERSION}"], check=True
    )
    check = "import sae_lens; from sae_lens.saes.matryoshka_batchtopk_sae import MatryoshkaBatchTopKTrainingSAE"
    subprocess.run([python, "-P", "-s", "-c", check], check=True, cwd=saelens_dir, env=reference_env())
    return venv


def run_saelens(saelens_dir: Path, cases: list[dict[str, Any]], workdir: Path) -> list[dict[str, Any]]:
    """Run the worker on ``cases`` (see ``saelens_worker.py``) in the sae-lens venv, in one process; its outputs."""
    spec_path, out_path = workdir / "saelens_spec.pt", workdir / "saelens_out.pt"
    torch.save(cases, spec_path)
    subprocess.run(
        [str(saelens_python(saelens_dir)), "-P", "-s", str(WORKER), str(spec_path), str(out_path)],
        check=True,
        cwd=workdir,
        env=reference_env(),
    )
    return torch.load(out_path, weights_only=True)
