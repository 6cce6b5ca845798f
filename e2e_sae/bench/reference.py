"""Ours vs the authors' ``e2e_sae`` (PyPI ``e2e-sae``) on the same config, weights and tokens.

The reference package is also named ``e2e_sae``, so it never enters this venv: ``setup_reference``
builds ``DIR/venv`` with it, and its side runs there as a subprocess (``reference_worker.py``). ``compare``
alternates fresh processes -- ours, theirs, then theirs, ours, ... -- each timing the same number of
steps after the same warm-up, and reports the median of the per-pair tokens/s ratios. Both sides get
our model's weights (converted to HookedTransformer's layout on their side), our initial SAE and the
same tokens; their first-step loss terms and grad norm are compared with ours.

Why a shim: the PyPI wheels (2.0.0-2.1.1) ship without ``e2e_sae/scripts/train_tlens*``, yet
``e2e_sae.loader`` imports ``HookedTransformerPreConfig`` from there (only to load a model file, which
we never do). ``setup_reference`` writes an import-only stand-in module (``SHIM``, our own code).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from e2e_sae.assemble import build_spliced_model, resolve_device
from e2e_sae.bench.common import bench_tokens, finish_worker, hardware, run_worker
from e2e_sae.config import ConfigError, RunConfig
from e2e_sae.model_shape import ModelShape

REFERENCE_VERSION = "2.1.1"
WORKER = Path(__file__).with_name("reference_worker.py")
SHIM = '''"""Import-only stand-in written by e2e_sae.bench (not part of e2e-sae): the PyPI wheel lacks this
module, which e2e_sae.loader imports for loading a model file from disk (unused by the benchmark)."""
from pydantic import BaseModel, ConfigDict


class HookedTransformerPreConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
'''
# What the reference imports: transformer-lens 3 (HookedTransformer; TL 4 drops it), numpy 2 for the
# pyarrow that datasets pulls in, and the modules its training pieces import. e2e-sae itself goes in
# with --no-deps: its other requirements (umap-learn, statsmodels, automated-interpretability, ...)
# are for analysis scripts and make pip backtrack for minutes.
REQUIREMENTS = [
    "transformer-lens<4",
    "numpy>=2",
    "einops",
    "jaxtyping",
    "pydantic>=2",
    "pyyaml",
    "python-dotenv",
    "wandb",
    "tqdm",
]


def venv_python(root: Path, option: str) -> Path:
    """``root/venv``'s python, made by ``python -m e2e_sae.bench --setup-<option> root``; one line if absent."""
    python = root / "venv" / "bin" / "python"
    if not python.exists():
        raise ConfigError(
            f"--{option}: no {option} venv in {root}; create it with python -m e2e_sae.bench --setup-{option} {root}"
        )
    return python


def reference_python(ref_dir: Path) -> Path:
    return venv_python(ref_dir, "reference")


def reference_env() -> dict[str, str]:
    """The environment for a process in the reference venv: none of our Python paths, and no ``CI``:
    the reference's ``e2e_sae.settings`` reads ``CI`` as "on GitHub Actions" and then requires
    ``GITHUB_WORKSPACE`` (its import fails under any other CI)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "CI")}


def setup_reference(ref_dir: Path) -> Path:
    """Create ``ref_dir/venv`` with e2e-sae 2.1.1, the same torch as ours, and the import shim."""
    ref_dir.mkdir(parents=True, exist_ok=True)
    venv = ref_dir / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"torch=={torch.__version__.split('+')[0]}", *REQUIREMENTS], check=True)
    subprocess.run([*pip, "--no-deps", f"e2e-sae=={REFERENCE_VERSION}"], check=True)
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    shim_dir = Path(purelib) / "e2e_sae" / "scripts" / "train_tlens"
    shim_dir.mkdir(parents=True, exist_ok=True)
    (shim_dir / "__init__.py").write_text("")
    (shim_dir / "run_train_tlens.py").write_text(SHIM)
    check = "from e2e_sae.models.transformers import SAETransformer; from e2e_sae.losses import calc_loss"
    subprocess.run(
        [str(venv / "bin" / "python"), "-P", "-s", "-c", check], check=True, cwd=ref_dir, env=reference_env()
    )
    return venv


# ---- the shared inputs ---------------------------------------------------------------------------

NATIVE_KEYS = ("embed.weight", "pos_embed.weight", "blocks.0.attn.q.weight", "unembed.weight", "unembed.bias")


def reference_spec(
    cfg: RunConfig,
    spliced,
    device: torch.device,
    workdir: Path,
    tokens: torch.Tensor,
    steps: int,
    warmup: int,
    threads: int | None,
) -> dict[str, Any]:
    """Write our model/SAE weights and the tokens for the reference side, and its spec."""
    state = spliced.model.state_dict()
    c = spliced.model.cfg
    if not all(k in state for k in NATIVE_KEYS) or getattr(c, "positional_embedding_type", "standard") != "standard":
        raise ConfigError(
            "--reference: needs a TL-native model with learned positions (model.native, "
            "builtin:..., or a .pt from save_native_lm); HF checkpoints are not converted"
        )
    torch.save(
        {
            "lm": {k: v.cpu() for k, v in state.items()},
            "sae": {k: v.cpu() for k, v in spliced.sae.state_dict().items()},
            "tokens": tokens,
        },
        workdir / "weights.pt",
    )
    lm_shape = {
        **asdict(ModelShape.from_tl(c)),
        "act_fn": c.act_fn,
        "normalization_type": c.normalization_type,
        "eps": c.eps,
    }
    lc, tc = cfg.loss, cfg.train
    if cfg.sae.architecture != "relu" or lc.sparsity is None:
        raise ConfigError(
            f"--reference: the authors' library trains relu SAEs only; sae.architecture is {cfg.sae.architecture}"
        )
    loss: dict[str, Any] = {
        "sparsity": {"coeff": lc.sparsity.coeff, "p_norm": lc.sparsity.p_norm},
        "out_to_orig": None,
        "out_to_in": None,
        "logits_kl": None,
        "in_to_orig": None,
    }
    for term, coeff in lc.active().items():
        loss[term] = (
            {"total_coeff": coeff, "hook_positions": spliced.downstream_hooks}
            if term == "in_to_orig"
            else {"coeff": coeff}
        )
    return {
        "weights": str(workdir / "weights.pt"),
        "lm_shape": lm_shape,
        "position": cfg.sae.position,
        "n_dict": spliced.sae.n_dict_elements,
        "loss": loss,
        "lr": tc.lr,
        "max_grad_norm": tc.max_grad_norm,
        "min_lr_factor": tc.min_lr_factor,
        "warmup_lr_steps": tc.warmup_steps,
        "total_steps": tc.total_steps,
        "grad_accum_steps": tc.grad_accum_steps,
        "steps": steps,
        "warmup": warmup,
        "threads": threads,
        "device": str(device),
    }


def equivalence(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Relative differences of the first step's loss terms and grad norm (same weights and tokens).

    A term that only one side computed, or a non-finite value, is an error: both would otherwise read
    as agreement (a NaN difference is dropped by ``max`` unless it comes first)."""
    missing = sorted(set(ours["terms"]) ^ set(theirs["terms"]))
    if missing:
        raise ValueError(
            f"the first step's loss terms differ: {', '.join(missing)} computed on one side only "
            f"(ours: {sorted(ours['terms'])}, reference: {sorted(theirs['terms'])})"
        )
    pairs = {k: (ours["terms"][k], theirs["terms"][k]) for k in ours["terms"]}
    pairs["loss"] = (ours["loss"], theirs["loss"])
    if ours.get("grad_norm") is not None or theirs.get("grad_norm") is not None:
        pairs["grad_norm"] = (ours.get("grad_norm"), theirs.get("grad_norm"))
    bad = [k for k, pair in pairs.items() if not all(v is not None and math.isfinite(v) for v in pair)]
    if bad:
        raise ValueError(f"the first step's {', '.join(bad)} is missing or not finite: {[pairs[k] for k in bad]}")
    rows = {
        k: {"ours": a, "reference": b, "rel_diff": abs(a - b) / max(abs(a), abs(b), 1e-30)}
        for k, (a, b) in pairs.items()
    }
    worst = max(r["rel_diff"] for r in rows.values())
    return {"terms": rows, "max_rel_diff": worst, "identical_within_1e-4": worst <= 1e-4}


# ---- the comparison ------------------------------------------------------------------------------


def compare(
    cfg: RunConfig,
    ref_dir: Path,
    repeats: int,
    worker_args: list[str],
    steps: int,
    warmup: int,
    threads: int | None,
    seed: int,
) -> dict[str, Any]:
    """``repeats`` alternating pairs of fresh processes: ours (``python -m e2e_sae.bench`` with
    ``worker_args``, the same steps/warm-up/threads/seed) and theirs (the reference worker)."""
    python = reference_python(ref_dir)
    device = resolve_device(cfg.train.device)
    # Built on the CPU only to export its weights (seeded init is device-independent), so this process
    # holds no accelerator memory while the workers run.
    spliced = build_spliced_model(cfg, torch.device("cpu"))
    tc = cfg.train
    tokens = bench_tokens(
        spliced.model.cfg.d_vocab, (warmup + steps) * tc.grad_accum_steps, tc.batch_size, cfg.data.n_ctx, seed
    )
    ours_runs, ref_runs = [], []
    with tempfile.TemporaryDirectory(prefix="e2e_sae_bench_ref_") as tmp:
        work = Path(tmp)
        spec = reference_spec(cfg, spliced, device, work, tokens, steps, warmup, threads)
        del spliced
        (work / "spec.json").write_text(json.dumps(spec))
        env = reference_env()
        env.setdefault("WANDB_MODE", "disabled")

        def run_ours(i: int) -> None:
            ours_runs.append(finish_worker(run_worker(cfg, work, f"ours{i}", worker_args), work / f"ours{i}.json"))

        def run_theirs(i: int) -> None:
            out = work / f"ref{i}.json"
            proc = subprocess.run(
                [str(python), "-P", "-s", str(WORKER), str(work / "spec.json"), str(out)],
                check=False,
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"reference worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            ref_runs.append(json.loads(out.read_text()))

        for i in range(repeats):
            for run in (run_ours, run_theirs) if i % 2 == 0 else (run_theirs, run_ours):
                run(i)
    ratios = [o["tokens_per_s"] / r["tokens_per_s"] for o, r in zip(ours_runs, ref_runs, strict=True)]
    flops_per_token = ours_runs[0]["flops_per_step"] / ours_runs[0]["tokens_per_step"]
    return {
        "median_ratio": statistics.median(ratios),
        "ratios": ratios,
        "ours_tokens_per_s_median": statistics.median(o["tokens_per_s"] for o in ours_runs),
        "reference_tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in ref_runs),
        # The same model FLOPs (counted from the shapes) over each side's time.
        "ours_achieved_tflops_median": statistics.median(o["achieved_tflops"] for o in ours_runs),
        "reference_achieved_tflops_median": flops_per_token
        * statistics.median(r["tokens_per_s"] for r in ref_runs)
        / 1e12,
        "equivalence": equivalence(ours_runs[0]["first_step"], ref_runs[0]["first_step"]),
        "last_loss": {"ours": ours_runs[0]["last_loss"], "reference": ref_runs[0]["last_loss"]},
        "repeats": repeats,
        "reference_version": ref_runs[0]["reference_version"],
        "config": {
            "mode": cfg.mode,
            "position": cfg.sae.position,
            "n_dict": spec["n_dict"],
            "batch_size": tc.batch_size,
            "n_ctx": cfg.data.n_ctx,
            "lm_shape": spec["lm_shape"],
        },
        "ours_runs": ours_runs,
        "reference_runs": ref_runs,
        **hardware(device),
    }


def phase_medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {k: statistics.median(r["ms_per_step"][k] for r in runs) for k in runs[0]["ms_per_step"]}


def describe(result: dict[str, Any]) -> str:
    c, eq = result["config"], result["equivalence"]
    ours, ref = phase_medians(result["ours_runs"]), phase_medians(result["reference_runs"])
    ratios = ", ".join(f"{r:.2f}" for r in result["ratios"])
    lines = [
        (
            f"{c['mode']} at {c['position']}, n_dict {c['n_dict']}, batch {c['batch_size']} x {c['n_ctx']}; "
            f"{result['device_name']}, torch {result['torch_version']}; e2e-sae {result['reference_version']}; "
            f"our SAE kernel {result['ours_runs'][0]['sae_kernel']}, L0 {result['ours_runs'][0]['train_l0']:.1f}"
        ),
        (
            f"tokens/s median: ours {result['ours_tokens_per_s_median']:,.0f}, reference "
            f"{result['reference_tokens_per_s_median']:,.0f}; median ratio {result['median_ratio']:.2f}x over "
            f"{result['repeats']} alternating pairs (ratios {ratios})"
        ),
        "ms/step medians (ours | reference): " + ", ".join(f"{k} {ours[k]:.1f} | {ref[k]:.1f}" for k in ours),
        (
            f"first step, same weights and tokens: max relative difference {eq['max_rel_diff']:.1e} over "
            + ", ".join(f"{k} {v['ours']:.6g}" for k, v in eq["terms"].items())
        ),
    ]
    return "\n".join(lines)
