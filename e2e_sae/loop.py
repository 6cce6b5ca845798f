"""The training loop, shared by a single run (:mod:`e2e_sae.train`) and a group (:mod:`e2e_sae.group`).

A :class:`Run` holds everything of one SAE run that a user sees; :func:`run_loop` drives one or
several runs in lockstep on one data stream: each optimizer step accumulates micro-batches (clean
pass -> SAE -> spliced pass -> loss -> backward; :mod:`e2e_sae.step`), then each run clips, steps
Adam and its schedule, and logs, evaluates and checkpoints every so many samples. A caller (e.g. the
Ray Tune sweep layer) passes ``reporter(metrics, checkpoint_dir)``, called at every eval/checkpoint
and once at the end with ``metrics["final"] = True``; the library knows nothing of Ray.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from e2e_sae.assemble import check_checkpoint_matches
from e2e_sae.checkpoint import rng_state, save_checkpoint
from e2e_sae.config import RunConfig
from e2e_sae.finetune import Parent
from e2e_sae.metrics import ActivationFrequency, evaluate
from e2e_sae.optim import make_optimizer
from e2e_sae.run_dir import RunDir
from e2e_sae.spliced import SplicedModel
from e2e_sae.step import StepStats, micro_step, optimizer_step
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


def eval_metrics(
    spliced: SplicedModel, eval_tokens: torch.Tensor, batch_size: int, act_freq: ActivationFrequency
) -> dict[str, Any]:
    """The held-out metrics (docs/metrics.md) plus the alive count of the activation-frequency window."""
    spliced.sae.eval()
    metrics = evaluate(spliced, eval_tokens, batch_size)
    spliced.sae.train()
    alive, window = act_freq.alive()
    return {
        **metrics,
        "alive_dict_elements": alive,
        "alive_window_tokens": window,
        "n_dict_elements": spliced.sae.n_dict_elements,
    }


class Run:
    """One SAE run's own state and outputs: SAE (in its spliced model), optimizer, schedule,
    activation-frequency window, step counters, ``metrics.jsonl``, W&B run and checkpoints.

    :func:`run_loop` drives one (:func:`train`) or several in lockstep on one data stream
    (:mod:`e2e_sae.group`); everything a user sees of a run lives here, so a group member is a run.
    """

    def __init__(
        self, cfg: RunConfig, spliced: SplicedModel, reporter: Reporter | None = None, parent: Parent | None = None
    ):
        self.cfg, self.spliced, self.reporter, self.parent = cfg, spliced, reporter, parent
        self.sae = spliced.sae
        self.optimizer, self.scheduler = make_optimizer(self.sae, cfg.train)
        device = next(self.sae.parameters()).device
        self.act_freq = ActivationFrequency(self.sae.n_dict_elements, cfg.train.act_frequency_n_tokens, device)
        self.step, self.n_samples = 0, 0
        self.final: dict[str, Any] | None = None
        self.error: str | None = None  # why the run stopped early (a non-finite loss)
        self.wandb_run: WandbRun | None = None
        self.pending_report: tuple[dict[str, Any], Path | None] | None = None

    def restore(self, state: dict[str, Any]) -> None:
        """Everything of this run the next step depends on (the data stream and RNG are the loop's)."""
        check_checkpoint_matches(self.cfg, state)
        self.sae.load_state_dict(state["sae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.act_freq.load_state_dict(state["act_frequency"])
        self.step, self.n_samples = int(state["step"]), int(state["n_samples"])

    def open_outputs(self, resume: bool) -> None:
        out = RunDir(self.cfg.output_dir)
        out.checkpoints.mkdir(parents=True, exist_ok=True)
        out.config.write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        self.log = MetricsLog(out.metrics_log)
        self.wandb_run = WandbRun(self.cfg, resume=resume)

    def save(self, stream_state: dict[str, Any], final: dict[str, Any] | None = None) -> Path:
        state = {
            "sae": self.sae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "n_samples": self.n_samples,
            "data": stream_state,
            "rng": rng_state(),
            "act_frequency": self.act_freq.state_dict(),
            "config": self.cfg.to_dict(),
            "weight_processing": self.cfg.model.weight_processing,
        }
        return save_checkpoint(
            RunDir(self.cfg.output_dir).checkpoints, self.n_samples, state, self.cfg.train.keep_checkpoints, final
        )

    def end_step(
        self,
        stats: StepStats,
        tokens_per_s: Callable[[], float],
        eval_tokens: torch.Tensor,
        stream_state: Callable[[], dict[str, Any]],
    ) -> dict[str, Any]:
        """After the step's micro-batches: refuse a non-finite loss, step Adam and the schedule, then
        log, evaluate, checkpoint and report as this step owes. Returns the train row."""
        tc = self.cfg.train
        means = stats.means()
        loss_value = means.pop("loss")
        if not math.isfinite(loss_value):
            raise TrainingDiverged(
                f"loss is {loss_value} at step {self.step} ({self.n_samples} samples); stopped. The last good "
                f"checkpoint in {self.cfg.output_dir / 'checkpoints'} is kept; lower train.lr or loss "
                "coefficients and resume or restart"
            )
        lr = self.scheduler.get_last_lr()[0]
        optimizer_step(self.sae, self.optimizer, self.scheduler, tc.max_grad_norm)
        samples_before = self.n_samples
        self.n_samples, self.step = self.n_samples + tc.step_samples, self.step + 1
        row = {"n_samples": self.n_samples, "step": self.step, "loss": loss_value, "lr": lr, **means}

        # What this step owes: the last step's eval and checkpoint come after the loop, once.
        is_last_step = self.step == tc.total_steps
        is_eval_step = crossed(tc.eval_every_n_samples, samples_before, self.n_samples) and not is_last_step
        is_checkpoint_step = crossed(tc.checkpoint_every_n_samples, samples_before, self.n_samples) and not is_last_step
        if self.step % LOG_EVERY_N_STEPS == 0 or is_eval_step or is_checkpoint_step:
            row["tokens_per_s"] = tokens_per_s()
            self.log.write({"kind": "train", **row})
            self.wandb.log(row, self.step)
        if is_eval_step:
            row.update(eval_metrics(self.spliced, eval_tokens, self.cfg.data.eval_batch_size, self.act_freq))
            self.log.write({"kind": "eval", **row, "final": False})
            self.wandb.log({**row, "final": False}, self.step)
        checkpoint_dir = self.save(stream_state()) if is_checkpoint_step else None
        if self.reporter is not None and (is_eval_step or is_checkpoint_step):
            self.pending_report = ({**row, "final": False}, checkpoint_dir)
        return row

    def report(self) -> None:
        """Hand this step's eval/checkpoint to the reporter: called once every run of the loop has
        saved its checkpoint of the step, so a group killed in a report resumes at a common step."""
        if self.pending_report is not None and self.reporter is not None:
            pending, self.pending_report = self.pending_report, None
            self.reporter(*pending)

    def finish(self, eval_tokens: torch.Tensor, stream_state: dict[str, Any]) -> dict[str, Any]:
        """The end of the run: final eval, checkpoint (holding the final metrics too), metrics.json
        (atomically), one last report."""
        final = {
            "n_samples": self.n_samples,
            "step": self.step,
            **eval_metrics(self.spliced, eval_tokens, self.cfg.data.eval_batch_size, self.act_freq),
            **(self.parent.lineage(self.cfg.finetune) if self.parent is not None else {}),
            "final": True,
        }
        self.log.write({"kind": "eval", **final})
        self.wandb.log(final, self.step)
        self.wandb.summary(final)
        checkpoint_dir = self.save(stream_state, final)
        out = RunDir(self.cfg.output_dir)
        tmp = out.metrics.with_name(out.metrics.name + ".tmp")
        tmp.write_text(json.dumps(final, indent=2))
        tmp.replace(out.metrics)
        if self.reporter is not None:
            self.reporter(final, checkpoint_dir)
        self.final = final
        return final

    @property
    def wandb(self) -> WandbRun:
        """The run's W&B logger (a no-op when W&B is disabled); exists once the outputs are open."""
        if self.wandb_run is None:
            raise RuntimeError("Run.open_outputs() must come before logging")
        return self.wandb_run

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()


# A micro-batch of every live run: (runs, tokens, each run's StepStats) -> None, gradients accumulated.
MicroStep = Callable[[list[Run], torch.Tensor, list[StepStats]], None]


def single_micro_step(runs: list[Run], tokens: torch.Tensor, stats: list[StepStats]) -> None:
    (run,) = runs
    micro_step(run.spliced, run.cfg, tokens, stats[0], run.act_freq)


def run_loop(
    runs: list[Run],
    stream,
    eval_tokens: torch.Tensor,
    device: torch.device,
    micro: MicroStep,
    *,
    stop_alone: bool = False,
    progress: bool = True,
    after_reports: Callable[[list[Run]], None] | None = None,
) -> None:
    """Train ``runs`` in lockstep on one data stream (they share n_samples and batch sizes): each
    optimizer step accumulates micro-batches (``micro``), then each run ends its step on its own.

    A run whose loss turns non-finite raises :class:`TrainingDiverged`; with ``stop_alone`` (a group)
    it stops alone with ``run.error`` set and the others go on. Runs that finish get ``run.final``.
    ``after_reports(runs)`` is called after every step whose reports went out and after the final
    reports: a caller that reports a group as one (a sweep's grouped trial) sends it there.
    """
    tc = runs[0].cfg.train
    live = [r for r in runs if r.error is None and r.final is None]
    step = live[0].step if live else tc.total_steps
    bar = tqdm(
        total=tc.n_samples,
        initial=live[0].n_samples if live else tc.n_samples,
        unit="samples",
        disable=not progress,
        dynamic_ncols=True,
    )
    t0, tokens_seen = time.perf_counter(), 0

    def tokens_per_s() -> float:
        elapsed = time.perf_counter() - t0
        return tokens_seen / elapsed if elapsed > 0 else float("nan")

    try:
        while step < tc.total_steps and live:
            stats = [StepStats() for _ in live]
            for _ in range(tc.grad_accum_steps):
                tokens = stream.next_batch(tc.batch_size).to(device)
                micro(live, tokens, stats)
                tokens_seen += tokens.numel()
            for run, run_stats in zip(list(live), stats, strict=True):
                try:
                    row = run.end_step(run_stats, tokens_per_s, eval_tokens, stream.state)
                except TrainingDiverged as err:
                    if not stop_alone:
                        raise
                    run.error = str(err)
                    live.remove(run)
                    continue
                if run is live[0]:
                    bar.set_postfix(loss=f"{row['loss']:.4g}", L0=f"{row['train_l0']:.1f}")
            reported = [run for run in live if run.pending_report is not None]
            for run in reported:
                run.report()
            if reported and after_reports is not None:
                after_reports(runs)
            step += 1
            bar.update(tc.step_samples)
        bar.close()
        for run in live:
            run.finish(eval_tokens, stream.state())
        if after_reports is not None:
            after_reports(runs)
    finally:
        bar.close()
