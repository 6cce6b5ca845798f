"""A run that starts from another SAE (``finetune.parent``): where its SAE and optimizer come from, the
checks that run before any model loads, and the lineage its metrics record.

Karvonen (2025) fine-tunes a local (MSE) SAE with KL + MSE for the last few percent of its samples
and recovers most of full e2e training's CE-loss gain. Here that is a run with a ``finetune``
section: its SAE starts as the parent's last checkpoint (optionally its Adam moments too), its loss is
any mode's (``loss.balance_kl_to_mse`` for Karvonen's balance) and its ``train`` section the
fine-tune's own schedule. Docs: docs/finetune.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from e2e_sae.config import ConfigError, FinetuneConfig, RunConfig, TrainConfig, finetune_samples, longer_than_parent
from e2e_sae.run_dir import CHECKPOINT_FILE, METRICS_FILE
from e2e_sae.sae_source import find_sae, load_sae_blob


@dataclass
class Parent:
    """What a fine-tune knows of its parent SAE before the model loads."""

    source: Path  # the SAE file or directory read (a run's last checkpoint directory for a run)
    n_samples: int | None  # the parent's training samples; None for an SAE of another library
    config: dict[str, Any] | None  # the parent's run config; None likewise
    optimizer: dict[str, Any] | None = None  # its Adam state, kept when finetune.optimizer_state asks for it
    total_n_samples: int | None = None  # the parent's samples with its own ancestors' (it may be a fine-tune)

    @property
    def mode(self) -> str | None:
        return (self.config or {}).get("mode")

    def lineage(self, finetune: FinetuneConfig | None = None) -> dict[str, Any]:
        """The fields a fine-tune's metrics carry: what it started from (its checkpoint, or where it is kept
        when the run read a copy: ``finetune.copied_from``; and its mode) and what that cost (its samples,
        and with its own ancestors'); an export reads them (:func:`export_lineage`)."""
        kept = finetune.copied_from if finetune is not None else None
        return {
            "finetune_parent": kept or str(self.source),
            "parent_mode": self.mode,
            "parent_n_samples": self.n_samples,
            "parent_total_n_samples": self.total_n_samples,
        }


def _total_samples(source: Path, n_samples: int, config: dict[str, Any]) -> int | None:
    """A parent's samples with its ancestors': a parent that is itself a fine-tune recorded them in the
    final metrics beside its checkpoint (None when they are gone)."""
    if not isinstance(config.get("finetune"), dict):
        return n_samples
    metrics = (source if source.is_dir() else source.parent) / METRICS_FILE
    try:
        final = json.loads(metrics.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    ancestors = final.get("parent_total_n_samples", final.get("parent_n_samples")) if isinstance(final, dict) else None
    return n_samples + ancestors if isinstance(ancestors, int) else None


def export_lineage(config: dict[str, Any], final: dict[str, Any]) -> dict[str, Any] | None:
    """How a fine-tuned SAE was trained, for its export: from a run config (``config``, with its
    ``finetune`` section) and the run's final metrics (``final``, with :meth:`Parent.lineage`'s fields).
    None for an SAE trained from scratch. ``fraction``: ``finetune.fraction`` when the config set it,
    else the fine-tune's samples over its parent's (a sweep's fine-tune sets the length itself)."""
    finetune = config.get("finetune")
    if not isinstance(finetune, dict):
        return None
    n, parent_n = final.get("n_samples"), final.get("parent_n_samples")
    parent_total = final.get("parent_total_n_samples", parent_n)
    fraction = finetune.get("fraction")
    if fraction is None and isinstance(n, int) and isinstance(parent_n, int) and parent_n > 0:
        fraction = n / parent_n
    return {
        "parent": final.get("finetune_parent", finetune.get("parent")),
        "parent_mode": final.get("parent_mode"),
        "parent_n_samples": parent_n,
        "mode": config.get("mode"),
        "n_samples": n,
        "fraction": fraction,
        "total_n_samples": n + parent_total if isinstance(n, int) and isinstance(parent_total, int) else None,
    }


def lineage_words(lineage: dict[str, Any] | None, mode: str | None, n_samples: int | None) -> str:
    """How an SAE was trained, in words (model cards): ``local SAE (960 samples) fine-tuned with e2e
    losses for 48 samples (5%)``, or ``e2e, 960 samples`` for one trained from scratch."""
    if lineage is None:
        return f"{mode}, {n_samples} samples"
    parent_n, fraction = lineage.get("parent_n_samples"), lineage.get("fraction")
    if lineage.get("parent_mode") is None:  # an SAE of another library: its training is not known here
        parent = f"SAE {lineage.get('parent')}" + (f" ({parent_n} samples)" if parent_n is not None else "")
    else:
        parent = f"{lineage['parent_mode']} SAE ({parent_n} samples)"
    share = f" ({100 * fraction:.3g}%)" if fraction is not None else ""
    return f"{parent} fine-tuned with {lineage.get('mode')} losses for {lineage.get('n_samples')} samples{share}"


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
    n_samples = int(blob["n_samples"])
    parent = Parent(source, n_samples, blob["config"], optimizer, _total_samples(source, n_samples, blob["config"]))
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
