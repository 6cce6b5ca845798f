"""Optional Weights & Biases logging for one run (``wandb.mode``: online | offline | disabled).

Metric names are the keys of ``metrics.jsonl`` rows (see README, "Metrics"), logged against the
optimizer step; the final eval is also the run summary. With ``disabled`` wandb is never imported.
"""

from __future__ import annotations

from typing import Any

from e2e_sae.config import RunConfig


class WandbRun:
    def __init__(self, cfg: RunConfig, resume: bool = False):
        self.run = None
        if cfg.wandb.mode == "disabled":
            return
        import wandb

        local_dir = cfg.wandb.dir or cfg.output_dir
        local_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=cfg.wandb.project or "e2e-sae",
            entity=cfg.wandb.entity,
            group=cfg.wandb.group,
            name=cfg.wandb.name,
            mode=cfg.wandb.mode,
            config=cfg.to_dict(),
            dir=str(local_dir),
            id=cfg.wandb.id,
            # With a stable id a restarted run (e.g. a sweep trial's retry) continues its W&B run.
            resume="allow" if resume or cfg.wandb.id else None,
            # A group's members are runs of one process: without this, wandb's default
            # ("return_previous") hands every member after the first the first member's run.
            settings=wandb.Settings(reinit="create_new"),
        )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
