"""A run that starts from another SAE (``finetune.parent``): where its SAE and optimizer come from, the
checks that run before any model loads, and the lineage its metrics record.

Karvonen (2025) fine-tunes a local (MSE) SAE with KL + MSE for the last few percent of its samples
and recovers most of full e2e training's CE-loss gain. Here that is a run with a ``finetune``
section: its SAE starts as the parent's last checkpoint (optionally its Adam moments too), its loss is
any mode's (``loss.balance_kl_to_mse`` for Karvonen's balance) and its ``train`` section the
fine-tune's own schedule. Docs: docs/finetune.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from e2e_sae.checkpoint import latest_checkpoint
from e2e_sae.config import ConfigError, FinetuneConfig, RunConfig, TrainConfig, finetune_samples, longer_than_parent
from e2e_sae.run_dir import CHECKPOINT_FILE, RunDir


@dataclass
class Parent:
    """What a fine-tune knows of its parent SAE before the model loads."""

    source: Path  # the SAE file or directory read (a run's last checkpoint directory for a run)
    n_samples: int | None  # the parent's training samples; None for an SAE of another library
    config: dict[str, Any] | None  # the parent's run config; None likewise
    optimizer: dict[str, Any] | None = None  # its Adam state, kept when finetune.optimizer_state asks for it

    def lineage(self, finetune: FinetuneConfig | None = None) -> dict[str, Any]:
        """The fields a fine-tune's metrics carry: what it started from (where it is kept, when the run
        read a copy: ``finetune.copied_from``) and what that cost."""
        kept = finetune.copied_from if finetune is not None else None
        return {"finetune_parent": kept or str(self.source), "parent_n_samples": self.n_samples}


def parent_source(parent: Path) -> Path:
    """The SAE a ``finetune.parent`` names: a run's output_dir means its last checkpoint."""
    if not parent.exists():
        raise ConfigError(f"finetune.parent: {parent} does not exist; give a run's output_dir or an SAE file")
    if RunDir(parent).checkpoints.is_dir() or RunDir(parent).config.is_file():
        last = latest_checkpoint(parent)
        if last is None:
            raise ConfigError(
                f"finetune.parent: the run in {parent} has no checkpoint yet; fine-tune it once it has finished"
            )
        return last
    return parent


def read_parent(cfg: RunConfig) -> Parent | None:
    """The run's parent (None without a ``finetune`` section), checked against the run: the same hook
    and dictionary size, and no more samples than the parent trained on. One ConfigError line each."""
    if cfg.finetune is None:
        return None
    source = parent_source(cfg.finetune.parent)
    file = source / CHECKPOINT_FILE if source.is_dir() else source
    blob = torch.load(file, map_location="cpu", weights_only=True) if file.is_file() else None
    ours = isinstance(blob, dict) and isinstance(blob.get("config"), dict) and "n_samples" in blob
    if not ours:
        if cfg.finetune.optimizer_state:
            raise ConfigError(
                f"finetune.optimizer_state: {source} is not a checkpoint of this library, so it has no optimizer "
                "state; drop finetune.optimizer_state"
            )
        return Parent(source, None, None)
    assert isinstance(blob, dict)
    optimizer = blob.get("optimizer") if cfg.finetune.optimizer_state else None
    parent = Parent(source, int(blob["n_samples"]), blob["config"], optimizer)
    _check_fits(cfg, parent)
    return parent


def _check_fits(cfg: RunConfig, parent: Parent) -> None:
    assert parent.config is not None and parent.n_samples is not None
    sae = parent.config.get("sae") or {}
    if sae.get("position") != cfg.sae.position:
        raise ConfigError(
            f"sae.position: the parent SAE ({parent.source}) reads {sae.get('position')} but this run sets "
            f"{cfg.sae.position}; set sae.position={sae.get('position')}"
        )
    if sae.get("dict_size_to_input_ratio") != cfg.sae.dict_size_to_input_ratio:
        raise ConfigError(
            f"sae.dict_size_to_input_ratio: the parent SAE has ratio {sae.get('dict_size_to_input_ratio')} but this "
            f"run sets {cfg.sae.dict_size_to_input_ratio}; set sae.dict_size_to_input_ratio="
            f"{sae.get('dict_size_to_input_ratio')}"
        )
    _check_length(cfg, parent)


def _check_length(cfg: RunConfig, parent: Parent) -> None:
    """No longer than the parent trained (its last checkpoint's samples), and ``finetune.fraction`` of
    that: the parent's configured ``train.n_samples`` may be more than it trained (whole steps only)."""
    assert parent.n_samples is not None
    fraction = cfg.finetune.fraction if cfg.finetune is not None else None
    planned = _trained_samples(parent.config)
    if fraction is not None and planned is not None and planned != parent.n_samples:
        raise ConfigError(
            f"finetune.parent: the parent's last checkpoint ({parent.source}) is at {parent.n_samples} of the "
            f"{planned} samples it trains; fine-tune it once it has finished, or drop finetune.fraction and set "
            "train.n_samples"
        )
    expected = finetune_samples(fraction, parent.n_samples) if fraction is not None else None
    if expected is not None and cfg.train.n_samples != expected:
        raise ConfigError(
            f"finetune.fraction: {fraction} of the parent's {parent.n_samples} samples is "
            f"{expected}, but train.n_samples is {cfg.train.n_samples}; set "
            "train.n_samples=null to take the length from the fraction, or drop finetune.fraction"
        )
    too_long = longer_than_parent(cfg.train, parent.n_samples)
    if too_long is not None:
        raise ConfigError(
            f"train.n_samples: {too_long}; fine-tune for at most the parent's length (finetune.fraction <= 1, "
            "or a smaller train.n_samples or batch)"
        )


def _trained_samples(config: dict[str, Any] | None) -> int | None:
    """The samples a run of this (saved) config trains on, None where it holds no valid train section."""
    try:
        return TrainConfig.model_validate((config or {})["train"]).trained_samples
    except (KeyError, TypeError, ValidationError):
        return None


def load_parent_optimizer(optimizer: torch.optim.Optimizer, parent: Parent) -> None:
    """The parent's Adam moments and step counts into ``optimizer``; its learning rates (param groups)
    stay this run's, so the fine-tune's own warm-up and decay apply."""
    state = parent.optimizer
    if state is None:
        raise ConfigError(f"finetune.optimizer_state: {parent.source} holds no optimizer state; drop it")
    mine = optimizer.state_dict()
    if len(state["param_groups"]) != len(mine["param_groups"]) or any(
        len(a["params"]) != len(b["params"]) for a, b in zip(state["param_groups"], mine["param_groups"], strict=True)
    ):
        raise ConfigError(
            f"finetune.optimizer_state: the parent's optimizer ({parent.source}) holds other parameters than this "
            "SAE's; drop finetune.optimizer_state"
        )
    optimizer.load_state_dict({"state": state["state"], "param_groups": mine["param_groups"]})
