"""Assemble a run's spliced model from its config: device, frozen LM, hook checks, SAE, kernel.

Shared by training, evaluation and the benchmark, so all three build exactly the same model.
"""

from __future__ import annotations

import torch

from e2e_sae.architectures import saved_architecture
from e2e_sae.config import ConfigError, RunConfig
from e2e_sae.finetune import Parent, read_parent
from e2e_sae.hooks import downstream_hooks
from e2e_sae.lm import load_language_model
from e2e_sae.sae import SAE, SAEFile, build_sae, read_sae_file
from e2e_sae.sae_kernels import resolve_kernel
from e2e_sae.sae_source import find_sae
from e2e_sae.spliced import SplicedModel
from e2e_sae.validate import check_hooks_in_model, check_n_ctx


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} requested but CUDA is not available; use cpu or auto")
    return torch.device(name)


def read_pretrained_sae(cfg: RunConfig, parent: Parent | None = None, field: str | None = None) -> SAEFile | None:
    """The SAE the run starts from: ``sae.pretrained_path`` (any path :func:`e2e_sae.sae_source.find_sae`
    resolves), or a fine-tune's ``parent`` (:func:`e2e_sae.finetune.read_parent`); refused (before the
    model loads) when it was trained under another ``model.weight_processing`` than this run's, unless
    forced. ``field``: what errors name (default the config field; ``--sae`` for evaluate)."""
    field = field or _source_field(cfg)
    path = parent.source if parent is not None else cfg.sae.pretrained_path
    if path is None:
        return None
    try:
        sae_file = read_sae_file(find_sae(path, field), cfg.sae.position)
    except ValueError as err:
        raise ConfigError(f"{field}: {err}") from None
    check_saved_sae_matches(cfg, sae_file.architecture, sae_file.input_normalization, field)
    for knob, value in sae_file.knobs.items():  # an SAELens TopK SAE's k is part of the SAE
        if getattr(cfg.sae, knob) != value:
            raise ConfigError(
                f"sae.{knob}: the SAE of {field} has {knob}={value} but this run sets "
                f"{getattr(cfg.sae, knob)}; set sae.{knob}={value}"
            )
    ours = cfg.model.weight_processing
    if sae_file.weight_processing not in (None, ours) and not cfg.sae.ignore_weight_processing_mismatch:
        raise ConfigError(
            f"{field}: the SAE was trained under model.weight_processing={sae_file.weight_processing}, "
            f"this model uses {ours}; set model.weight_processing={sae_file.weight_processing}, or "
            "sae.ignore_weight_processing_mismatch=true to use it anyway"
        )
    return sae_file


def check_saved_sae_matches(cfg: RunConfig, architecture: str, normalization: str, source: str) -> None:
    """An SAE saved as one architecture (or input normalisation) loads only under the same one."""
    if architecture != cfg.sae.architecture:
        raise ConfigError(
            f"sae.architecture: the SAE of {source} was trained as {architecture} but this run sets "
            f"{cfg.sae.architecture}; set sae.architecture={architecture}"
        )
    if normalization != cfg.sae.input_normalization:
        raise ConfigError(
            f"sae.input_normalization: the SAE of {source} was trained with {normalization} but this run sets "
            f"{cfg.sae.input_normalization}; set sae.input_normalization={normalization}"
        )


def check_checkpoint_matches(cfg: RunConfig, state: dict) -> None:
    """A training checkpoint resumes only under the architecture and normalisation it was saved with."""
    saved = state.get("config")
    sae = (saved.get("sae") or {}) if isinstance(saved, dict) else {}
    check_saved_sae_matches(
        cfg, saved_architecture(saved), sae.get("input_normalization") or "none", "the checkpoint resumed"
    )


def check_pretrained_shape(cfg: RunConfig, state: dict[str, torch.Tensor], d_in: int, field: str | None = None) -> None:
    """The pretrained SAE's input width must be the hook's; its dictionary size the configured one."""
    field = field or _source_field(cfg)
    n_dict, sae_d_in = state["encoder.0.weight"].shape
    if sae_d_in != d_in:
        raise ConfigError(
            f"{field}: the SAE reads d_in={sae_d_in} but {cfg.sae.position} of this model has "
            f"d_model={d_in}; use an SAE trained on this model"
        )
    if n_dict != round(cfg.sae.dict_size_to_input_ratio * d_in):
        raise ConfigError(
            f"sae.dict_size_to_input_ratio: {cfg.sae.dict_size_to_input_ratio} gives "
            f"{round(cfg.sae.dict_size_to_input_ratio * d_in)} elements but the SAE of {field} has "
            f"{n_dict}; "
            f"set sae.dict_size_to_input_ratio={n_dict / d_in:g}"
        )


def _source_field(cfg: RunConfig) -> str:
    """The config field that named the SAE a run starts from."""
    return "finetune.parent" if cfg.finetune is not None else "sae.pretrained_path"


def build_spliced_model(cfg: RunConfig, device: torch.device) -> SplicedModel:
    """Load the frozen model, check the hook points against it, and splice a fresh (or loaded) SAE."""
    pretrained = read_pretrained_sae(cfg, read_parent(cfg))  # before the model loads: a mismatch costs nothing
    return splice_sae(cfg, load_checked_model(cfg, device), device, pretrained)


def load_checked_model(cfg: RunConfig, device: torch.device):
    """The run's frozen language model (with its weight processing), its hook points and context
    checked against the loaded model (preflight may not have known its shape)."""
    model = load_language_model(
        cfg.model.name, cfg.model.native, device=device, weight_processing=cfg.model.weight_processing or "none"
    )
    check_hooks_in_model(cfg, model.hook_dict, model.cfg.n_layers)
    check_n_ctx(cfg.data.n_ctx, model.cfg.n_ctx)
    return model


def seeded_sae(cfg: RunConfig, d_in: int) -> SAE:
    """The run's freshly initialised SAE: the global RNG seeded with ``cfg.seed``, then the SAE drawn
    (the RNG is left as the run continues from it)."""
    torch.manual_seed(cfg.seed)
    try:
        return build_sae(cfg, d_in)
    except ValueError as err:  # knobs that do not fit the dictionary (checked by preflight where d_in is known)
        raise ConfigError(str(err)) from None


def splice_sae(
    cfg: RunConfig, model, device: torch.device, pretrained: SAEFile | None = None, field: str | None = None
) -> SplicedModel:
    """A fresh (seeded by ``cfg.seed``) or ``pretrained`` SAE spliced into an already loaded ``model``;
    the members of a group (:mod:`e2e_sae.group`) share one model this way. ``field``: as for
    :func:`read_pretrained_sae`."""
    d_in = model.cfg.d_model
    sae = seeded_sae(cfg, d_in)
    if pretrained is not None:
        check_pretrained_shape(cfg, pretrained.state, d_in, field)
        sae.load_state_dict(pretrained.state)
    downstream: list[str] = []
    if cfg.loss.in_to_orig is not None:
        downstream = cfg.loss.in_to_orig.hook_positions or downstream_hooks(cfg.sae.position, model.cfg.n_layers)
    if cfg.train.compile:
        sae.compile()  # in place: parameter names, hence checkpoints, are unchanged
    autocast = cfg.train.autocast_bf16 if cfg.train.autocast_bf16 is not None else device.type == "cuda"
    p_norm = cfg.p_norm
    kernel = resolve_kernel(cfg.train.sae_kernel, device.type, p_norm, cfg.train.compile)
    kernel = kernel if cfg.sae.architecture == "relu" else "autograd"  # the fused kernels are relu's
    return SplicedModel(
        model, sae.to(device), cfg.sae.position, downstream, autocast_bf16=autocast, p_norm=p_norm, sae_kernel=kernel
    )
