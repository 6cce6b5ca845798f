"""Assemble a run's spliced model from its config: device, frozen LM, hook checks, SAE, kernel.

Shared by training, evaluation and the benchmark, so all three build exactly the same model.
"""

from __future__ import annotations

import torch

from e2e_sae.config import ConfigError, RunConfig
from e2e_sae.hooks import downstream_hooks
from e2e_sae.lm import load_language_model
from e2e_sae.sae import SAE, load_sae_state_dict
from e2e_sae.sae_kernels import resolve_kernel
from e2e_sae.spliced import SplicedModel
from e2e_sae.validate import check_hooks_in_model, check_n_ctx


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} requested but CUDA is not available; use cpu or auto")
    return torch.device(name)


def build_spliced_model(cfg: RunConfig, device: torch.device) -> SplicedModel:
    """Load the frozen model, check the hook points against it, and splice a fresh (or loaded) SAE."""
    model = load_language_model(cfg.model.name, cfg.model.native, device=device)
    check_hooks_in_model(cfg, model.hook_dict, model.cfg.n_layers)  # preflight may not have known the shape
    check_n_ctx(cfg.data.n_ctx, model.cfg.n_ctx)
    return splice_sae(cfg, model, device)


def splice_sae(cfg: RunConfig, model, device: torch.device) -> SplicedModel:
    """A fresh (seeded by ``cfg.seed``) or loaded SAE spliced into an already loaded ``model``; the
    members of a group (:mod:`e2e_sae.group`) share one model this way."""
    d_in = model.cfg.d_model
    torch.manual_seed(cfg.seed)
    sae = SAE(d_in, round(cfg.sae.dict_size_to_input_ratio * d_in))
    if cfg.sae.pretrained_path is not None:
        sae.load_state_dict(load_sae_state_dict(cfg.sae.pretrained_path, cfg.sae.position))
    downstream: list[str] = []
    if cfg.loss.in_to_orig is not None:
        downstream = cfg.loss.in_to_orig.hook_positions or downstream_hooks(cfg.sae.position, model.cfg.n_layers)
    if cfg.train.compile:
        sae.compile()  # in place: parameter names, hence checkpoints, are unchanged
    autocast = cfg.train.autocast_bf16 if cfg.train.autocast_bf16 is not None else device.type == "cuda"
    p_norm = cfg.loss.sparsity.p_norm
    kernel = resolve_kernel(cfg.train.sae_kernel, device.type, p_norm, cfg.train.compile)
    return SplicedModel(model, sae.to(device), cfg.sae.position, downstream, autocast_bf16=autocast,
                        p_norm=p_norm, sae_kernel=kernel)
