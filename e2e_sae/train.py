"""Train one SAE spliced into a frozen language model: ``python -m e2e_sae.train CONFIG.yaml``.

The loop, top to bottom: each optimizer step accumulates micro-batches (clean pass -> SAE -> spliced
pass -> loss -> backward; :mod:`e2e_sae.step`), then clips, steps Adam and the schedule; every so many
samples it logs, evaluates on the held-out tokens and checkpoints. A caller (e.g. the Ray Tune sweep
layer) passes ``reporter(metrics, checkpoint_dir)``, called at every eval/checkpoint and once at the
end with ``metrics["final"] = True``; the library knows nothing of Ray.

Output directory: ``config.yaml`` (resolved), ``metrics.jsonl`` (one JSON object per train log /
eval row), ``checkpoints/samples_<n>/checkpoint.pt``, ``metrics.json`` (final eval).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from tqdm.auto import tqdm

from e2e_sae.assemble import build_spliced_model, resolve_device
from e2e_sae.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from e2e_sae.config import ConfigError, RunConfig, load_run_config, parse_overrides
from e2e_sae.data import load_eval_tokens, open_train_stream
from e2e_sae.metric_names import HEADLINE
from e2e_sae.metrics import ActivationFrequency, evaluate
from e2e_sae.optim import make_optimizer
from e2e_sae.spliced import SplicedModel
from e2e_sae.step import StepStats, micro_step, optimizer_step
from e2e_sae.tokenizer import check_tokenizer, resolve_tokenizer
from e2e_sae.validate import preflight
from e2e_sae.wandb_log import WandbRun

Reporter = Callable[[dict[str, Any], "Path | None"], None]
LOG_EVERY_N_STEPS = 10


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept untouched."""


class MetricsLog:
    """Append-only JSON lines, flushed per row so a crash loses nothing written."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def crossed(every_n_samples: int | None, samples_before: int, samples_after: int) -> bool:
    """Whether a multiple of ``every_n_samples`` lies in ``(samples_before, samples_after]``."""
    return every_n_samples is not None and samples_after // every_n_samples > samples_before // every_n_samples


def eval_metrics(spliced: SplicedModel, eval_tokens: torch.Tensor, batch_size: int,
                 act_freq: ActivationFrequency) -> dict[str, Any]:
    """The held-out metrics (docs/metrics.md) plus the alive count of the activation-frequency window."""
    spliced.sae.eval()
    metrics = evaluate(spliced, eval_tokens, batch_size)
    spliced.sae.train()
    alive, window = act_freq.alive()
    return {**metrics, "alive_dict_elements": alive, "alive_window_tokens": window,
            "n_dict_elements": spliced.sae.n_dict_elements}


def train(
    cfg: RunConfig,
    *,
    resume_from: str | Path | None = None,
    reporter: Reporter | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one SAE as configured; returns the final metrics (also written to ``metrics.json``)."""
    # Every check that needs no model runs first: a bad config costs nothing and writes nothing.
    preflight(cfg, resume=resume_from is not None)
    device = resolve_device(cfg.train.device)
    spliced = build_spliced_model(cfg, device)
    sae, tc = spliced.sae, cfg.train
    tokenizer = resolve_tokenizer(cfg, spliced.model)
    check_tokenizer(cfg, tokenizer)
    stream = open_train_stream(cfg.data.train, cfg.data.n_ctx, cfg.seed, tokenizer)
    eval_tokens = load_eval_tokens(cfg.data.eval, cfg.data.n_ctx, cfg.data.n_eval_samples, tokenizer)
    optimizer, scheduler = make_optimizer(sae, tc)
    act_freq = ActivationFrequency(sae.n_dict_elements, tc.act_frequency_n_tokens, device)

    # Resume: everything the next step depends on comes back, so the run continues bit for bit.
    step, n_samples = 0, 0
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        sae.load_state_dict(state["sae"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stream.restore(state["data"])
        act_freq.load_state_dict(state["act_frequency"])
        set_rng_state(state["rng"])
        step, n_samples = int(state["step"]), int(state["n_samples"])

    out = cfg.output_dir
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    log = MetricsLog(out / "metrics.jsonl")
    wandb_run = WandbRun(cfg, resume=resume_from is not None)

    def save(at_step: int, at_samples: int) -> Path:
        state = {
            "sae": sae.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "step": at_step, "n_samples": at_samples, "data": stream.state(), "rng": rng_state(),
            "act_frequency": act_freq.state_dict(), "config": cfg.to_dict(),
            "weight_processing": cfg.model.weight_processing,
        }
        return save_checkpoint(out / "checkpoints", at_samples, state, tc.keep_checkpoints)

    bar = tqdm(total=tc.n_samples, initial=n_samples, unit="samples", disable=not progress, dynamic_ncols=True)
    t0, tokens_seen = time.perf_counter(), 0
    try:
        while step < tc.total_steps:
            # One optimizer step: accumulate micro-batches, then refuse to step on a non-finite loss.
            stats = StepStats()
            for _ in range(tc.grad_accum_steps):
                tokens = stream.next_batch(tc.batch_size).to(device)
                micro_step(spliced, cfg, tokens, stats, act_freq)
                tokens_seen += tokens.numel()
            means = stats.means()
            loss_value = means.pop("loss")
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"loss is {loss_value} at step {step} ({n_samples} samples); stopped. The last good "
                    f"checkpoint in {out / 'checkpoints'} is kept; lower train.lr or loss coefficients and "
                    "resume or restart"
                )
            lr = scheduler.get_last_lr()[0]
            optimizer_step(sae, optimizer, scheduler, tc.max_grad_norm)
            samples_before, n_samples, step = n_samples, n_samples + tc.effective_batch_size, step + 1
            train_row = {"n_samples": n_samples, "step": step, "loss": loss_value, "lr": lr, **means}
            bar.update(tc.effective_batch_size)
            bar.set_postfix(loss=f"{loss_value:.4g}", L0=f"{train_row['train_l0']:.1f}")

            # What this step owes: the last step's eval and checkpoint come after the loop, once.
            is_last_step = step == tc.total_steps
            is_eval_step = crossed(tc.eval_every_n_samples, samples_before, n_samples) and not is_last_step
            is_checkpoint_step = (crossed(tc.checkpoint_every_n_samples, samples_before, n_samples)
                                  and not is_last_step)
            is_log_step = step % LOG_EVERY_N_STEPS == 0 or is_eval_step or is_checkpoint_step

            if is_log_step:
                elapsed = time.perf_counter() - t0
                train_row["tokens_per_s"] = tokens_seen / elapsed if elapsed > 0 else float("nan")
                log.write({"kind": "train", **train_row})
                wandb_run.log(train_row, step)
            if is_eval_step:
                train_row.update(eval_metrics(spliced, eval_tokens, cfg.data.eval_batch_size, act_freq))
                log.write({"kind": "eval", **train_row, "final": False})
                wandb_run.log({**train_row, "final": False}, step)
            checkpoint_dir = save(step, n_samples) if is_checkpoint_step else None
            if reporter is not None and (is_eval_step or is_checkpoint_step):
                reporter({**train_row, "final": False}, checkpoint_dir)
        bar.close()

        # The end of the run: final eval, checkpoint, metrics.json (atomically), one last report.
        final = {"n_samples": n_samples, "step": step,
                 **eval_metrics(spliced, eval_tokens, cfg.data.eval_batch_size, act_freq), "final": True}
        log.write({"kind": "eval", **final})
        wandb_run.log(final, step)
        wandb_run.summary(final)
        checkpoint_dir = save(step, n_samples)
        tmp = out / "metrics.json.tmp"
        tmp.write_text(json.dumps(final, indent=2))
        tmp.replace(out / "metrics.json")
        if reporter is not None:
            reporter(final, checkpoint_dir)
        return final
    finally:
        bar.close()
        wandb_run.finish()


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
    print(" ".join(f"{k}={metrics[k]:.4g}" for k in HEADLINE))
    print(f"wrote {cfg.output_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
