"""``--group K``: throughput of one grouped run of K members against K separate runs, alternating.

The members differ in the sparsity coefficient (the config's, times 2^i), as in a coefficient sweep.
Every variant times the same training step the library runs (:mod:`e2e_sae.group`,
:mod:`e2e_sae.step`) on the same seeded tokens, after untimed warm-up steps:

- ``separate``: K runs one after another, each its own clean pass (what K trials cost);
- ``group_stacked``: one clean pass, the K spliced suffixes as one batch (modes with a loss past the SAE);
- ``group_loop``: one clean pass, the K suffixes one after another.

The variants alternate step by step (``repeats`` x ``steps`` rounds, the order rotating each round),
so a noisy shared machine slows all alike; the result holds each step's tokens/s (summed over
members), each round's ratio to ``separate``, and their medians.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from e2e_sae.assemble import load_checked_model, read_pretrained_sae, resolve_device, splice_sae
from e2e_sae.bench.common import bench_tokens, hardware
from e2e_sae.bench.throughput import peak_memory, peak_rss_mib, reset_peak_rss
from e2e_sae.config import ConfigError, RunConfig, apply_overrides, run_config_from_dict
from e2e_sae.group import group_micro_step
from e2e_sae.loop import Run
from e2e_sae.model_shape import ModelShape
from e2e_sae.step import StepStats, micro_step, optimizer_step


def member_configs(cfg: RunConfig, k: int) -> list[RunConfig]:
    raw = cfg.to_dict()
    if cfg.loss.sparsity is None:
        raise ConfigError(
            f"--group: the members differ in loss.sparsity.coeff, which {cfg.sae.architecture} has not; "
            "benchmark a relu or jumprelu config"
        )
    return [
        run_config_from_dict(apply_overrides(raw, {"loss.sparsity.coeff": cfg.loss.sparsity.coeff * 2**i}))
        for i in range(k)
    ]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _end_step(run: Run, stats: StepStats) -> None:
    stats.means()  # the loop's per-step host sync
    optimizer_step(run.sae, run.optimizer, run.scheduler, run.cfg.train.max_grad_norm)


def _group_step(runs: list[Run], batches: torch.Tensor, micro) -> None:
    stats = [StepStats() for _ in runs]
    for tokens in batches:
        micro(runs, tokens, stats)
    for run, s in zip(runs, stats, strict=True):
        _end_step(run, s)


def _separate_step(runs: list[Run], batches: torch.Tensor) -> None:
    for run in runs:
        stats = StepStats()
        for tokens in batches:
            micro_step(run.spliced, run.cfg, tokens, stats, run.act_freq)
        _end_step(run, stats)


def group_benchmark(
    cfg: RunConfig, k: int, steps: int = 5, warmup: int = 2, repeats: int = 3, seed: int = 0
) -> dict[str, Any]:
    device = resolve_device(cfg.train.device)
    model = load_checked_model(cfg, device)
    cfgs = member_configs(cfg, k)
    pretrained = [read_pretrained_sae(c) for c in cfgs]
    tc = cfg.train
    accum = tc.grad_accum_steps
    shape = ModelShape.from_tl(model.cfg)
    tokens = bench_tokens(shape.d_vocab, (warmup + steps) * accum, tc.batch_size, cfg.data.n_ctx, seed).to(device)
    batches = tokens.view(warmup + steps, accum, tc.batch_size, cfg.data.n_ctx)

    def fresh_runs() -> list[Run]:
        return [Run(c, splice_sae(c, model, device, p)) for c, p in zip(cfgs, pretrained, strict=True)]

    variants: dict[str, Any] = {
        "separate": lambda runs, b: _separate_step(runs, b),
        "group_loop": lambda runs, b: _group_step(runs, b, group_micro_step(False)),
    }
    can_stack = cfg.loss.needs_logits and fresh_runs()[0].spliced.sae_layer is not None
    if can_stack:
        variants["group_stacked"] = lambda runs, b: _group_step(runs, b, group_micro_step(True))
    tokens_per_step = k * tc.batch_size * cfg.data.n_ctx * accum  # summed over members
    # Alternate step by step (the order rotating), so load from other jobs hits every variant alike.
    states = {name: fresh_runs() for name in variants}
    for i in range(warmup):
        for name, step_fn in variants.items():
            step_fn(states[name], batches[i])
    names = list(variants)
    step_s: dict[str, list[float]] = {name: [] for name in names}
    memory: dict[str, float] = {}
    whole = peak_memory(device)  # before the per-variant resets below lower the process's recorded peak
    for rnd in range(repeats * steps):
        batch = batches[warmup + rnd % steps]
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            cpu_peak = device.type == "cpu" and reset_peak_rss()
            _sync(device)
            t0 = time.perf_counter()
            variants[name](states[name], batch)
            _sync(device)
            step_s[name].append(time.perf_counter() - t0)
            if device.type == "cuda":
                memory[name] = max(memory.get(name, 0.0), torch.cuda.max_memory_allocated(device) / 2**20)
            elif cpu_peak:  # the process's peak RSS during this variant's step (every variant's state included)
                memory[name] = max(memory.get(name, 0.0), peak_rss_mib())
    per_step = {name: [tokens_per_step / t for t in v] for name, v in step_s.items()}
    median = {name: tokens_per_step / statistics.median(v) for name, v in step_s.items()}
    ratios = {
        name: [s / g for g, s in zip(v, step_s["separate"], strict=True)]
        for name, v in step_s.items()
        if name != "separate"
    }
    return {
        "group_size": k,
        "mode": cfg.mode,
        "position": cfg.sae.position,
        "n_dict_elements": round(cfg.sae.dict_size_to_input_ratio * shape.d_model),
        "pretrained_sae": str(cfg.sae.pretrained_path) if cfg.sae.pretrained_path else None,
        "batch_size": tc.batch_size,
        "n_ctx": cfg.data.n_ctx,
        "grad_accum_steps": accum,
        "steps": steps,
        "warmup_steps": warmup,
        "repeats": repeats,
        "tokens_per_s_summed": per_step,
        "tokens_per_s_median": median,
        "speedup_per_round": ratios,
        "speedup_median": {n: statistics.median(r) for n, r in ratios.items()},
        **whole,
        "peak_memory_mib": max(whole["peak_memory_mib"], *memory.values()),
        "peak_memory_mib_per_variant": memory or None,
        "peak_memory_kind_per_variant": ("cuda_max_memory_allocated" if device.type == "cuda" else "cpu_peak_rss")
        if memory
        else None,
        **hardware(device),
    }


def group_summary(r: dict[str, Any]) -> str:
    lines = [
        f"{r['mode']} at {r['position']}, K={r['group_size']} members, n_dict {r['n_dict_elements']}, "
        f"batch {r['batch_size']} x {r['n_ctx']}, {r['repeats'] * r['steps']} alternating rounds; "
        f"{r['device_name']}, {r['torch_threads']} threads"
    ]
    for name, values in r["tokens_per_s_summed"].items():
        spread = f"{min(values):,.0f}-{max(values):,.0f}"
        extra = ""
        if name in r["speedup_median"]:
            rounds = r["speedup_per_round"][name]
            q = statistics.quantiles(rounds, n=4) if len(rounds) > 1 else rounds * 3
            extra = (
                f"; vs separate: median {r['speedup_median'][name]:.2f}x "
                f"(quartiles {q[0]:.2f}-{q[2]:.2f} over {len(values)} rounds)"
            )
        lines.append(f"  {name:14s} tokens/s summed: median {r['tokens_per_s_median'][name]:,.0f} ({spread}){extra}")
    mem = r["peak_memory_mib_per_variant"]
    lines.append(
        f"  peak memory per variant ({r['peak_memory_kind_per_variant']}): "
        + ", ".join(f"{name} {mib:,.0f} MiB" for name, mib in mem.items())
        if mem
        else f"  peak memory {r['peak_memory_mib']:.0f} MiB ({r['peak_memory_kind']}, whole process)"
    )
    return "\n".join(lines)
