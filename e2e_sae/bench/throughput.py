"""Throughput of our training step: the timed loop, model FLOPs and MFU, packing, bf16 check."""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from e2e_sae.assemble import build_spliced_model, resolve_device
from e2e_sae.bench.common import PHASES, bench_tokens, finish_worker, hardware, run_worker
from e2e_sae.builtin.catalog import MODEL_CFG, VOCAB_SIZE
from e2e_sae.config import ConfigError, RunConfig, load_run_config, parse_overrides, run_config_from_dict
from e2e_sae.data import load_eval_tokens
from e2e_sae.hooks import hook_layer
from e2e_sae.metrics import ActivationFrequency, evaluate
from e2e_sae.model_shape import ModelShape
from e2e_sae.optim import make_optimizer
from e2e_sae.step import StepStats, micro_step, optimizer_step
from e2e_sae.tokenizer import resolve_tokenizer

# Randomly initialised TL-native models of known shapes (``--model NAME``); SAE at the middle layer.
PRESETS: dict[str, dict[str, Any]] = {
    "small-random": {**MODEL_CFG, "d_vocab": VOCAB_SIZE},  # the built-in model's shape
    "gpt2-small-random": dict(
        n_layers=12,
        d_model=768,
        n_heads=12,
        d_head=64,
        d_mlp=3072,
        n_ctx=1024,
        d_vocab=50257,
        act_fn="gelu_new",
        normalization_type="LN",
        seed=0,
    ),
}

# Dense peak TFLOP/s from NVIDIA's datasheets: (substring of the device name, bf16 tensor core, fp32).
# fp32 is the non-tensor-core figure (PyTorch leaves TF32 matmuls off by default). First match wins.
PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    ("H100 PCIe", 756.0, 51.2),
    ("H100 NVL", 835.0, 60.0),
    ("H100", 989.4, 66.9),  # SXM
    ("H200", 989.4, 66.9),
    ("A100", 312.0, 19.5),
)


def bench_config_dict(native: dict[str, Any]) -> dict[str, Any]:
    """The run config used when no CONFIG is given: the paper's e2e settings on a given model shape."""
    return {
        "mode": "e2e",
        "output_dir": "runs/bench",
        "seed": 0,
        "model": {"native": dict(native)},
        "data": {"train": {"name": "unused-by-bench"}, "eval": {"name": "unused-by-bench"}, "n_ctx": native["n_ctx"]},
        "sae": {"position": f"blocks.{native['n_layers'] // 2}.hook_resid_pre", "dict_size_to_input_ratio": 60},
        "loss": {"sparsity": {"coeff": 1.0}},
        "train": {"n_samples": 400_000, "batch_size": 8, "lr": 5e-4, "max_grad_norm": 10.0},
    }


def load_bench_config(
    path: str | None, overrides: list[str] | None, model: str | None = None, mode: str | None = None
) -> RunConfig:
    """A run config as training loads it (YAML + ``--set``), with ``--model``/``--mode`` shorthands."""
    extra: dict[str, Any] = {}
    if model is not None:
        extra["model"] = {"native": dict(PRESETS[model])} if model in PRESETS else {"name": model}
    if mode is not None:
        extra["mode"] = mode
    extra.update(parse_overrides(overrides))
    if path is not None:
        return load_run_config(path, extra)
    native = PRESETS[model] if model in PRESETS else PRESETS["small-random"]
    return run_config_from_dict(bench_config_dict(native), extra)


# ---- FLOPs and peak ------------------------------------------------------------------------------


def train_flops_per_token(s: ModelShape, n_ctx: int, n_dict: int, layers_before: int, needs_logits: bool) -> int:
    """Matmul FLOPs of one training step per token, counted from the shapes (2 FLOPs per multiply-add).

    Counted: the clean pass up to the SAE (to the logits when the loss needs them); the SAE forward
    (encoder + decoder: 2 matmuls) and backward (encoder and decoder weight grads and the grad into
    the dictionary activations: 3 matmuls; its input needs none); the model from the SAE onward
    forward and backward. The model is frozen, so its backward is input grads only: 1x the forward
    for linear layers, 2x for the attention matmuls (q k^T and pattern v, both operands need grads).
    Attention is counted at full n_ctx x n_ctx (as implementations compute it). Not counted:
    layer norms, softmax, elementwise ops, embeddings. Standard (non-gated, no-GQA) blocks.
    """
    width = s.n_heads * s.d_head
    linear = 2 * s.d_model * width * 4 + 2 * 2 * s.d_model * s.d_mlp  # W_Q, W_K, W_V, W_O; MLP in/out
    attn = 2 * 2 * n_ctx * width  # scores and pattern @ v
    block_fwd, block_bwd = linear + attn, linear + 2 * attn
    unembed = 2 * s.d_model * s.d_vocab
    sae_fwd, sae_bwd = 2 * 2 * s.d_model * n_dict, 3 * 2 * s.d_model * n_dict
    if not needs_logits:
        return layers_before * block_fwd + sae_fwd + sae_bwd
    after = s.n_layers - layers_before
    clean = s.n_layers * block_fwd + unembed
    return clean + sae_fwd + after * block_fwd + unembed + sae_bwd + after * block_bwd + unembed


def peak_tflops(device_name: str, bf16: bool) -> float | None:
    for key, bf16_peak, fp32_peak in PEAK_TFLOPS:
        if key in device_name:
            return bf16_peak if bf16 else fp32_peak
    return None


# ---- memory --------------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Lower this process's recorded peak RSS (Linux's VmHWM) to its current RSS, so that
    :func:`peak_rss_mib` then reads the peak of what ran since ("5" to /proc/self/clear_refs, Linux
    >= 4.0); False where that is not possible. Tensors of more than 32 MB are mmapped by glibc and
    return to the system when freed, so each variant's peak is its own, not an earlier one's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """This process's peak RSS since the last :func:`reset_peak_rss` (its start, without one)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {
            "peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_memory_kind": "cuda_max_memory_allocated",
        }
    return {
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_memory_kind": "cpu_peak_rss",
    }


# ---- the timed training step ---------------------------------------------------------------------


class PhaseTimer:
    """Wall time per phase; on CUDA the device is synchronised at every phase boundary."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.t = 0.0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self) -> None:
        self.t = self._now()

    def lap(self, phase: str) -> None:
        now = self._now()
        self.totals[phase] += now - self.t
        self.t = now


def benchmark(
    cfg: RunConfig, steps: int = 10, warmup: int = 3, seed: int = 0, peak: float | None = None
) -> dict[str, Any]:
    """Time ``steps`` optimizer steps after ``warmup`` untimed ones, built as ``e2e_sae.train`` builds them."""
    device = resolve_device(cfg.train.device)
    spliced = build_spliced_model(cfg, device)
    sae, tc = spliced.sae, cfg.train
    accum = tc.grad_accum_steps
    optimizer, scheduler = make_optimizer(sae, tc)
    act_freq = ActivationFrequency(sae.n_dict_elements, tc.act_frequency_n_tokens, device)
    shape = ModelShape.from_tl(spliced.model.cfg)
    tokens = bench_tokens(shape.d_vocab, (warmup + steps) * accum, tc.batch_size, cfg.data.n_ctx, seed).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    timer, step_times, last_loss = PhaseTimer(device), [], float("nan")
    first: dict[str, Any] = {}  # the first micro-batch's loss and terms, then the first step's grad norm
    l0s: list[float] = []  # batch L0 of the timed steps: the sparse kernel's speed depends on it
    for step in range(warmup + steps):
        if step == warmup:
            timer.totals = dict.fromkeys(PHASES, 0.0)
        t_step = sum(timer.totals.values())
        stats = StepStats()
        for micro in range(accum):
            timer.start()
            loss, terms = micro_step(spliced, cfg, tokens[step * accum + micro], stats, act_freq, timer.lap)
            if not first:
                first.update(loss=loss.item(), terms={k: v.item() for k, v in terms.items()})
        timer.start()
        means = stats.means()  # the loop's per-step host sync
        timer.lap("bookkeeping")
        grad_norm = optimizer_step(sae, optimizer, scheduler, tc.max_grad_norm)
        timer.lap("optimizer")
        last_loss = means["loss"]
        if step == 0:
            first["grad_norm"] = None if grad_norm is None else grad_norm.item()
        if step >= warmup:
            step_times.append(sum(timer.totals.values()) - t_step)
            l0s.append(means["train_l0"])

    tokens_per_step = tc.batch_size * cfg.data.n_ctx * accum
    timed_s = sum(timer.totals.values())
    layers_before = spliced.sae_layer
    if layers_before is None:  # a hook inside block L or after it: count blocks 0..L as upstream
        layer = hook_layer(cfg.sae.position)
        layers_before = 0 if layer is None else layer + 1
    flops = train_flops_per_token(shape, cfg.data.n_ctx, sae.n_dict_elements, layers_before, cfg.loss.needs_logits)
    flops_per_step = flops * tokens_per_step
    hw = hardware(device)
    if peak is None and device.type == "cuda":
        peak = peak_tflops(hw["device_name"], spliced.autocast_bf16)
    achieved = flops_per_step * steps / timed_s / 1e12
    return {
        "side": "ours",
        "mode": cfg.mode,
        "position": cfg.sae.position,
        "lm_shape": vars(shape),
        "n_dict_elements": sae.n_dict_elements,
        "batch_size": tc.batch_size,
        "n_ctx": cfg.data.n_ctx,
        "grad_accum_steps": accum,
        "autocast_bf16": spliced.autocast_bf16,
        "steps": steps,
        "warmup_steps": warmup,
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": tokens_per_step * steps / timed_s,
        "ms_per_step": {**{k: 1000 * v / steps for k, v in timer.totals.items()}, "total": 1000 * timed_s / steps},
        "ms_per_step_median": 1000 * statistics.median(step_times),
        **peak_memory(device),
        "flops_per_step": flops_per_step,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "mfu": achieved / peak if peak else None,
        "first_step": first,
        "last_loss": last_loss,
        "sae_kernel": spliced.sae_kernel,
        "train_l0": statistics.mean(l0s) if l0s else None,
        **hw,
    }


# ---- other modes ---------------------------------------------------------------------------------


def pack(cfg: RunConfig, counts: list[int], worker_args: list[str]) -> dict[str, Any]:
    """Makespan of N identical benchmark processes started together on one device, for each N."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="e2e_sae_pack_") as tmp:
        for n in counts:
            t0 = time.perf_counter()
            procs = [run_worker(cfg, Path(tmp), f"pack{n}_{i}", worker_args) for i in range(n)]
            results = [finish_worker(p, Path(tmp) / f"pack{n}_{i}.json") for i, p in enumerate(procs)]
            makespan = time.perf_counter() - t0
            rows.append(
                {
                    "n_trials": n,
                    "makespan_s": makespan,
                    "tokens_per_s_per_trial": [r["tokens_per_s"] for r in results],
                    "tokens_per_s_total": sum(r["tokens_per_s"] for r in results),
                    "peak_memory_mib_per_trial": [r["peak_memory_mib"] for r in results],
                }
            )
    return {"pack": rows, "worker_args": worker_args, **hardware(resolve_device(cfg.train.device))}


def compare_bf16(cfg: RunConfig) -> dict[str, Any]:
    """CE-loss increase of a trained SAE on the config's eval tokens, fp32 vs bf16 autocast for the LM."""
    device = resolve_device(cfg.train.device)
    if device.type != "cuda":
        raise ConfigError("--compare-bf16: bf16 autocast is CUDA-only in this library; run on a GPU machine")
    if cfg.sae.pretrained_path is None:
        raise ConfigError("--compare-bf16: needs a trained SAE; pass --sae CHECKPOINT or set sae.pretrained_path")
    spliced = build_spliced_model(cfg, device)
    tokens = load_eval_tokens(
        cfg.data.eval, cfg.data.n_ctx, cfg.data.n_eval_samples, resolve_tokenizer(cfg, spliced.model)
    )
    out: dict[str, Any] = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        spliced.autocast_bf16 = bf16
        out[name] = evaluate(spliced, tokens, cfg.data.eval_batch_size)
    diff = out["bf16"]["ce_loss_increase"] - out["fp32"]["ce_loss_increase"]
    return {**out, "ce_loss_increase_diff": diff, "sae": str(cfg.sae.pretrained_path), **hardware(device)}


def summary(r: dict[str, Any]) -> str:
    ms = r["ms_per_step"]
    parts = " + ".join(f"{k.replace('_', ' ')} {ms[k]:.1f}" for k in PHASES)
    mfu = f"MFU {100 * r['mfu']:.1f}% of {r['peak_tflops']:g} TFLOP/s" if r["mfu"] else "MFU n/a (no peak known)"
    return (
        f"{r['mode']} at {r['position']}, n_dict {r['n_dict_elements']}, batch {r['batch_size']} x {r['n_ctx']} "
        f"tokens (accum {r['grad_accum_steps']}), SAE kernel {r['sae_kernel']}, L0 {r['train_l0']:.1f}; "
        f"{r['device_name']}, {r['torch_threads']} threads, torch {r['torch_version']}\n"
        f"tokens/s {r['tokens_per_s']:,.0f}; ms/step {ms['total']:.1f} = {parts}\n"
        f"peak memory {r['peak_memory_mib']:.0f} MiB ({r['peak_memory_kind']}); model FLOPs "
        f"{r['flops_per_step'] / 1e9:.2f} GFLOP/step, {1000 * r['achieved_tflops']:.1f} GFLOP/s; {mfu}"
    )
