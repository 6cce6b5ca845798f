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

from e2e_sae.config import ConfigError, RunConfig, finetune_samples
from e2e_sae.run_dir import CHECKPOINT_FILE
from e2e_sae.sae_source import find_sae, load_sae_blob


@dataclass
class Parent:
    """What a fine-tune knows of its parent SAE before the model loads."""

    source: Path  # the SAE file or directory read (a run's last checkpoint directory for a run)
    n_samples: int | None  # the parent's training samples; None for an SAE of another library
    config: dict[str, Any] | None  # the parent's run config; None likewise
    optimizer: dict[str, Any] | None = None  # its Adam state, kept when finetune.optimizer_state asks for it

    def lineage(self) -> dict[str, Any]:
        """The fields a fine-tune's metrics carry: what it started from and what that cost."""
        return {"finetune_parent": str(self.source), "parent_n_samples": self.n_samples}


def parent_source(parent: Path) -> Path:
    """The SAE a ``finetune.parent`` names (:func:`e2e_sae.sae_source.find_sae`: a run's output_dir
    means its last checkpoint, a sweep trial its newest)."""
    return find_sae(parent, "finetune.parent")


def read_parent(cfg: RunConfig) -> Parent | None:
    """The run's parent (None without a ``finetune`` section), checked against the run: the same hook
    and dictionary size, and no more samples than the parent trained on. One ConfigError line each."""
    if cfg.finetune is None:
        return None
    source = parent_source(cfg.finetune.parent)
    file = source / CHECKPOINT_FILE if source.is_dir() else source
    try:
        blob = load_sae_blob(file) if file.is_file() else None
    except ValueError as err:
        raise ConfigError(f"finetune.parent: {err}") from None
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
    fraction = cfg.finetune.fraction if cfg.finetune is not None else None
    expected = finetune_samples(fraction, parent.n_samples) if fraction is not None else None
    if expected is not None and cfg.train.n_samples != expected:
        raise ConfigError(
            f"finetune.fraction: {fraction} of the parent's {parent.n_samples} samples is "
            f"{expected}, but train.n_samples is {cfg.train.n_samples}; set "
            "train.n_samples=null to take the length from the fraction, or drop finetune.fraction"
        )
    if cfg.train.n_samples > parent.n_samples:
        raise ConfigError(
            f"train.n_samples: a fine-tune of {cfg.train.n_samples} samples is longer than its parent's "
            f"{parent.n_samples}; fine-tune for at most the parent's length (finetune.fraction <= 1)"
        )


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
