"""Train one SAE spliced into a frozen language model: ``python -m e2e_sae.train CONFIG.yaml``.

The loop, top to bottom: clean pass (no grad) -> SAE -> spliced pass -> loss -> accumulate ->
clip -> Adam step -> schedule; eval and checkpoints every so many samples. A caller (e.g. the Ray
Tune sweep layer) passes ``reporter(metrics, checkpoint_dir)``, called at every eval/checkpoint and
once at the end with ``metrics["final"] = True``; the library knows nothing of Ray.

Output directory: ``config.yaml`` (resolved), ``metrics.jsonl`` (one JSON object per train log /
eval row), ``checkpoints/samples_<n>/checkpoint.pt``, ``metrics.json`` (final eval).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from tqdm.auto import tqdm

from e2e_sae.checkpoint import list_checkpoints, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from e2e_sae.config import ConfigError, RunConfig, TrainConfig, load_run_config, parse_overrides
from e2e_sae.data import load_eval_tokens, open_train_stream
from e2e_sae.lm import load_language_model
from e2e_sae.losses import total_loss
from e2e_sae.metrics import ActivationFrequency, evaluate
from e2e_sae.sae import SAE, load_sae_state_dict
from e2e_sae.sae_kernels import resolve_kernel
from e2e_sae.spliced import SplicedModel, downstream_resid_pre_hooks
from e2e_sae.tokenizer import resolve_tokenizer
from e2e_sae.validate import check_n_ctx, hook_fields, preflight, valid_hook_names
from e2e_sae.wandb_log import WandbRun

Reporter = Callable[[dict[str, Any], "Path | None"], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept untouched."""


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_factor: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_lr_factor`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_factor + (1 - min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(sae: torch.nn.Module, tc: TrainConfig):
    """Adam over the SAE and its warm-up + cosine schedule, stepped once per optimizer step."""
    optimizer = torch.optim.Adam(sae.parameters(), lr=tc.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, tc.total_steps, tc.warmup_steps, tc.min_lr_factor)
    )
    return optimizer, scheduler


def _no_lap(phase: str) -> None:
    pass


class StepStats:
    """Device-side sums over one optimizer step's micro-batches (loss, batch L0, each loss term),
    read back with a single host sync."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0

    def add(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], fired: torch.Tensor, n_tokens: int) -> None:
        for key, value in {"loss": loss.detach(), "train_l0": fired.sum() / n_tokens, **terms}.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.n += 1

    def means(self) -> dict[str, float]:
        values = torch.stack(list(self.sums.values())).tolist()
        return {key: value / self.n for key, value in zip(self.sums, values)}


def micro_step(
    spliced: SplicedModel, cfg: RunConfig, tokens: torch.Tensor, stats: StepStats, act_freq: ActivationFrequency,
    lap: Callable[[str], None] = _no_lap,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One micro-batch of the training step: clean pass, spliced pass, loss, backward (scaled for
    gradient accumulation), bookkeeping. ``lap(phase)`` marks each phase's end (the benchmark's timer)."""
    clean = spliced.clean_forward(tokens, need_logits=cfg.needs_logits)
    lap("clean_forward")
    sp = spliced.spliced_forward(tokens, clean, need_logits=cfg.needs_logits)
    loss, terms = total_loss(
        cfg.loss, c_norm=sp.c_norm, acts=clean.acts, acts_hat=sp.acts_hat, logits_orig=clean.logits,
        logits_spliced=sp.logits, downstream_orig=clean.downstream, downstream_spliced=sp.downstream,
    )
    lap("spliced_forward")
    (loss / cfg.train.grad_accum_steps).backward()
    lap("backward")
    act_freq.update(sp.fired, tokens.numel())
    stats.add(loss, terms, sp.fired, tokens.numel())
    lap("bookkeeping")
    return loss, terms


def optimizer_step(sae: torch.nn.Module, optimizer, scheduler, max_grad_norm: float | None) -> torch.Tensor | None:
    """Clip, Adam step, zero the gradients, advance the schedule; returns the pre-clip grad norm."""
    grad_norm = torch.nn.utils.clip_grad_norm_(sae.parameters(), max_grad_norm) if max_grad_norm is not None else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return grad_norm


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} requested but CUDA is not available; use cpu or auto")
    return torch.device(name)


def build_spliced_model(cfg: RunConfig, device: torch.device) -> SplicedModel:
    """Load the frozen model, check the hook points against it, and splice a fresh (or loaded) SAE."""
    model = load_language_model(cfg.model.name, cfg.model.native, device=device)
    hooks = model.hook_dict
    for field, name in hook_fields(cfg):  # preflight could not check them where the shape was unknown
        if name not in hooks:
            valid = [h for h in valid_hook_names(model.cfg.n_layers) if h in hooks]
            raise ConfigError(f"{field}: {name!r} is not a hook point of this model; valid: {', '.join(valid)}")
    check_n_ctx(cfg.data.n_ctx, model.cfg.n_ctx)
    d_in = model.cfg.d_model
    torch.manual_seed(cfg.seed)
    sae = SAE(d_in, round(cfg.sae.dict_size_to_input_ratio * d_in))
    if cfg.sae.pretrained_path is not None:
        sae.load_state_dict(load_sae_state_dict(cfg.sae.pretrained_path, cfg.sae.position))
    downstream: list[str] = []
    if cfg.loss.in_to_orig is not None:
        downstream = cfg.loss.in_to_orig.hook_positions or downstream_resid_pre_hooks(
            cfg.sae.position, model.cfg.n_layers
        )
    if cfg.train.compile:
        sae.compile()  # in place: parameter names, hence checkpoints, are unchanged
    autocast = cfg.train.autocast_bf16 if cfg.train.autocast_bf16 is not None else device.type == "cuda"
    p_norm = cfg.loss.sparsity.p_norm
    kernel = resolve_kernel(cfg.train.sae_kernel, device.type, p_norm, cfg.train.compile)
    return SplicedModel(model, sae.to(device), cfg.sae.position, downstream, autocast_bf16=autocast,
                        p_norm=p_norm, sae_kernel=kernel)


class MetricsLog:
    """Append-only JSON lines, flushed per row so a crash loses nothing written."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def train(
    cfg: RunConfig,
    *,
    resume_from: str | Path | None = None,
    reporter: Reporter | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one SAE as configured; returns the final metrics (also written to ``metrics.json``)."""
    preflight(cfg, resume=resume_from is not None)
    device = resolve_device(cfg.train.device)
    random.seed(cfg.seed)
    spliced = build_spliced_model(cfg, device)
    sae = spliced.sae
    tokenizer = resolve_tokenizer(cfg, spliced.model)
    stream = open_train_stream(cfg.data.train, cfg.data.n_ctx, cfg.seed, tokenizer)
    eval_tokens = load_eval_tokens(cfg.data.eval, cfg.data.n_ctx, cfg.data.n_eval_samples, tokenizer)

    tc = cfg.train
    eb = tc.effective_batch_size
    total_steps = tc.total_steps
    optimizer, scheduler = make_optimizer(sae, tc)
    act_freq = ActivationFrequency(sae.n_dict_elements, tc.act_frequency_n_tokens, device)
    step = 0
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        sae.load_state_dict(state["sae"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stream.restore(state["data"])
        act_freq.load_state_dict(state["act_frequency"])
        set_rng_state(state["rng"])
        step = int(state["step"])

    out = cfg.output_dir
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    log = MetricsLog(out / "metrics.jsonl")
    wandb_run = WandbRun(cfg, resume=resume_from is not None)
    n_dict = sae.n_dict_elements

    def checkpoint() -> Path:
        state = {
            "sae": sae.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "step": step, "n_samples": step * eb, "data": stream.state(), "rng": rng_state(),
            "act_frequency": act_freq.state_dict(), "config": cfg.to_dict(),
        }
        return save_checkpoint(out / "checkpoints", step * eb, state, tc.keep_checkpoints)

    def eval_metrics() -> dict[str, Any]:
        sae.eval()
        metrics = evaluate(spliced, eval_tokens, cfg.data.eval_batch_size)
        sae.train()
        alive, window = act_freq.alive()
        return {**metrics, "alive_dict_elements": alive, "alive_window_tokens": window, "n_dict_elements": n_dict}

    def crossed(every: int | None, before: int, after: int) -> bool:
        return every is not None and after // every > before // every

    bar = tqdm(total=tc.n_samples, initial=step * eb, unit="samples", disable=not progress, dynamic_ncols=True)
    t0, tokens_seen = time.perf_counter(), 0
    while step < total_steps:
        stats = StepStats()
        for _ in range(tc.grad_accum_steps):
            tokens = stream.next_batch(tc.batch_size).to(device)
            micro_step(spliced, cfg, tokens, stats, act_freq)
            tokens_seen += tokens.numel()
        means = stats.means()
        loss_value = means.pop("loss")
        if not math.isfinite(loss_value):
            bar.close()
            wandb_run.finish()
            raise TrainingDiverged(
                f"loss is {loss_value} at step {step} ({step * eb} samples); stopped. The last good checkpoint "
                f"in {out / 'checkpoints'} is kept; lower train.lr or loss coefficients and resume or restart"
            )
        lr = scheduler.get_last_lr()[0]
        optimizer_step(sae, optimizer, scheduler, tc.max_grad_norm)
        before, step = step * eb, step + 1
        after = step * eb
        train_row = {"n_samples": after, "step": step, "loss": loss_value, "lr": lr, **means}
        bar.update(eb)
        bar.set_postfix(loss=f"{loss_value:.4g}", L0=f"{train_row['train_l0']:.1f}")
        is_last = step == total_steps
        do_eval = crossed(tc.eval_every_n_samples, before, after) and not is_last
        do_ckpt = crossed(tc.checkpoint_every_n_samples, before, after) and not is_last
        if step % 10 == 0 or do_eval or do_ckpt:
            elapsed = time.perf_counter() - t0
            train_row["tokens_per_s"] = tokens_seen / elapsed if elapsed > 0 else float("nan")
            log.write({"kind": "train", **train_row})
            wandb_run.log(train_row, step)
        if do_eval or do_ckpt:
            row = {**train_row, **(eval_metrics() if do_eval else {}), "final": False}
            if do_eval:
                log.write({"kind": "eval", **row})
                wandb_run.log(row, step)
            ckpt_dir = checkpoint() if do_ckpt else None
            if reporter is not None:
                reporter(row, ckpt_dir)
    bar.close()

    final = {"n_samples": step * eb, "step": step, **eval_metrics(), "final": True}
    log.write({"kind": "eval", **final})
    wandb_run.log(final, step)
    wandb_run.summary(final)
    ckpt_dir = checkpoint()
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(final, indent=2))
    tmp.replace(out / "metrics.json")
    if reporter is not None:
        reporter(final, ckpt_dir)
    wandb_run.finish()
    return final


def latest_checkpoint(output_dir: Path) -> Path | None:
    ckpts = list_checkpoints(output_dir / "checkpoints")
    return ckpts[-1] if ckpts else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e_sae.train", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="run config YAML")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                        help="override a config field, value parsed as YAML (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        cfg = load_run_config(args.config, parse_overrides(args.overrides))
        resume_from = None
        if args.resume:
            resume_from = latest_checkpoint(cfg.output_dir)
            if resume_from is None:
                raise ConfigError(f"--resume: no checkpoint in {cfg.output_dir / 'checkpoints'}; drop --resume to start")
        metrics = train(cfg, resume_from=resume_from, progress=not args.no_progress)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    keys = ["l0", "alive_dict_elements", "ce_loss_increase", "ce_loss_score", "explained_variance", "kl"]
    print(" ".join(f"{k}={metrics[k]:.4g}" for k in keys))
    print(f"wrote {cfg.output_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
