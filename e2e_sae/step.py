"""One optimizer step of SAE training, shared by the training loop and the benchmark.

A micro-batch: clean pass (no grad) -> SAE -> spliced pass -> loss -> backward, scaled for gradient
accumulation, with the loop's bookkeeping (activation frequency, batch L0, loss terms) kept on the
device. Then :func:`optimizer_step`: clip, Adam, schedule. :class:`StepStats` reads the step's sums
back with one host sync, so the bookkeeping costs no extra synchronisation per term.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from e2e_sae.config import RunConfig
from e2e_sae.losses import OrigLogProbs, orig_log_probs, total_loss
from e2e_sae.metrics import ActivationFrequency
from e2e_sae.spliced import CleanPass, SplicedModel, SplicedPass


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
        return {key: value / self.n for key, value in zip(self.sums, values, strict=True)}


def clean_log_probs(cfg: RunConfig, clean: CleanPass) -> OrigLogProbs | None:
    """The clean pass's :func:`~e2e_sae.losses.orig_log_probs` when the loss has a KL term, else None."""
    return orig_log_probs(clean.needed_logits()) if "logits_kl" in cfg.loss.active() else None


def member_loss(
    cfg: RunConfig, clean: CleanPass, sp: SplicedPass, orig: OrigLogProbs | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The run's loss (and its unweighted terms) from the clean and the spliced pass. ``orig``: the
    clean pass's :func:`clean_log_probs`, shared by a group's members (computed here when None)."""
    return total_loss(
        cfg.loss,
        c_norm=sp.c_norm,
        acts=clean.acts,
        acts_hat=sp.acts_hat,
        orig=orig if orig is not None else clean_log_probs(cfg, clean),
        logits_spliced=sp.logits,
        downstream_orig=clean.downstream,
        downstream_spliced=sp.downstream,
        input_scale=sp.input_scale,
        prefixes=sp.prefixes,
        aux=sp.aux,
    )


def record(
    stats: StepStats,
    act_freq: ActivationFrequency,
    loss: torch.Tensor,
    terms: dict[str, torch.Tensor],
    sp: SplicedPass,
    n_tokens: int,
) -> None:
    """The loop's bookkeeping of one micro-batch: activation frequency and the step's sums."""
    act_freq.update(sp.fired, n_tokens)
    stats.add(loss, terms, sp.fired, n_tokens)


def micro_step(
    spliced: SplicedModel,
    cfg: RunConfig,
    tokens: torch.Tensor,
    stats: StepStats,
    act_freq: ActivationFrequency,
    lap: Callable[[str], None] = _no_lap,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One micro-batch of the training step: clean pass, spliced pass, loss, backward (scaled for
    gradient accumulation), bookkeeping. ``lap(phase)`` marks each phase's end (the benchmark's timer)."""
    clean = spliced.clean_forward(tokens, need_logits=cfg.loss.needs_logits)
    lap("clean_forward")
    sp = spliced.spliced_forward(tokens, clean, need_logits=cfg.loss.needs_logits)
    loss, terms = member_loss(cfg, clean, sp)
    lap("spliced_forward")
    (loss / cfg.train.grad_accum_steps).backward()
    lap("backward")
    record(stats, act_freq, loss, terms, sp, tokens.numel())
    lap("bookkeeping")
    return loss, terms


def optimizer_step(sae: torch.nn.Module, optimizer, scheduler, max_grad_norm: float | None) -> torch.Tensor | None:
    """Clip, Adam step, zero the gradients, advance the schedule; returns the pre-clip grad norm."""
    grad_norm = torch.nn.utils.clip_grad_norm_(sae.parameters(), max_grad_norm) if max_grad_norm is not None else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return grad_norm
