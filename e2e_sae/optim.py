"""The optimizer and learning-rate schedule: Adam, linear warm-up, cosine decay to a floor.

The schedule is a pure function of the step, so the training loop, the built-in model's builder and
the benchmark share it, and a resumed run continues it exactly (the scheduler state is checkpointed).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from e2e_sae.config import TrainConfig


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
