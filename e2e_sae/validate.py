"""Checks that need more than the config's own types, run before any model or data is loaded.

Each failure is a :class:`ConfigError` with one line naming the field and the fix. Nothing here
writes to disk, so a bad config never touches an existing run directory.
"""

from __future__ import annotations

from pathlib import Path

from e2e_sae.architectures.spec import check_dictionary
from e2e_sae.builtin.assets import builtin_model_path
from e2e_sae.builtin.catalog import parse_name
from e2e_sae.config import ConfigError, ModelConfig, RunConfig
from e2e_sae.data import check_held_out, check_source_exists
from e2e_sae.hooks import BLOCK_HOOKS, GLOBAL_HOOKS, hook_layer, is_known_hook, valid_hook_names
from e2e_sae.model_shape import ModelShape
from e2e_sae.sae_source import find_sae


def model_shape(model: ModelConfig, network: bool = True) -> ModelShape | None:
    """Layers and context of the model without loading weights; None where unknown offline. An HF
    model's config.json comes from the HF cache first; only with ``network`` is the hub asked (``plan``
    never asks: it must be instant and quiet on a machine without the hub)."""
    if model.native is not None:
        return ModelShape.from_tl(model.native)
    name = model.name or ""
    path = None
    if (builtin := parse_name(name)) is not None:
        try:
            path = builtin_model_path(builtin)
        except ValueError as err:
            raise ConfigError(f"model.name: {err}") from None
    elif name.endswith(".pt"):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"model.name: checkpoint {name} does not exist; fix the path")
    if path is not None:
        import torch

        return ModelShape.from_tl(torch.load(path, map_location="cpu", weights_only=True)["cfg"])
    from transformers import AutoConfig

    for local_only in (True, False) if network else (True,):
        try:
            return ModelShape.from_hf(AutoConfig.from_pretrained(name, local_files_only=local_only))
        except Exception:  # not cached / no network / unknown name: the loaded model is checked instead
            continue
    return None


def unknown_shape_line(model: ModelConfig) -> str:
    """What a check without the model's shape could not know, in one line."""
    return (
        f"model {model.name}: its config.json is not in the HF cache and plan never contacts the hub, so "
        "layers and n_ctx are checked when run loads the model"
    )


def check_hook(name: str, field: str, shape: ModelShape | None) -> None:
    layer = hook_layer(name)
    if layer is not None and shape is not None and layer >= shape.n_layers:
        raise ConfigError(f"{field}: layer {layer} is out of range; the model has layers 0..{shape.n_layers - 1}")
    if not is_known_hook(name):
        raise ConfigError(
            f"{field}: unknown hook point {name!r}; use one of {', '.join(GLOBAL_HOOKS)} or "
            f"blocks.<layer>.<{'|'.join(BLOCK_HOOKS)}>"
        )


def check_output_dir(output_dir: Path, resume: bool, how_to_resume: str = "--resume") -> None:
    """A fresh run never writes into a directory holding files; ``how_to_resume`` is what the caller's
    interface calls continuing (the CLI's ``--resume``, the Python API's ``resume_from=``)."""
    if resume:
        return
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ConfigError(
            f"output_dir: {output_dir} already holds files; pass {how_to_resume} to continue that run "
            "or choose a new output_dir (nothing was written)"
        )


def hook_fields(cfg: RunConfig) -> list[tuple[str, str]]:
    """(config field, hook name) of every hook point the run uses: the SAE's and the downstream ones."""
    downstream = (cfg.loss.in_to_orig.hook_positions or []) if cfg.loss.in_to_orig is not None else []
    return [("sae.position", cfg.sae.position)] + [
        (f"loss.in_to_orig.hook_positions.{i}", h) for i, h in enumerate(downstream)
    ]


def check_hooks_in_model(cfg: RunConfig, hook_dict: dict, n_layers: int) -> None:
    """Every hook point the run uses exists in the loaded model (for models whose shape was unknown before)."""
    for field, name in hook_fields(cfg):
        if name not in hook_dict:
            valid = [h for h in valid_hook_names(n_layers) if h in hook_dict]
            raise ConfigError(f"{field}: {name!r} is not a hook point of this model; valid: {', '.join(valid)}")


def check_n_ctx(n_ctx: int, model_n_ctx: int) -> None:
    if n_ctx > model_n_ctx:
        raise ConfigError(f"data.n_ctx: {n_ctx} exceeds the model's context {model_n_ctx}; lower it")


def check_architecture_fits(cfg: RunConfig, d_in: int) -> None:
    """The architecture's knobs against the dictionary size (k below it, Matryoshka prefixes inside it)."""
    try:
        check_dictionary(cfg.sae.architecture, cfg.sae.knobs(), round(cfg.sae.dict_size_to_input_ratio * d_in))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def check_pretrained_path(cfg: RunConfig) -> None:
    """``sae.pretrained_path`` names an SAE (:func:`e2e_sae.sae_source.find_sae`; read before the model loads)."""
    if cfg.sae.pretrained_path is not None:
        find_sae(cfg.sae.pretrained_path, "sae.pretrained_path")


def check_config(cfg: RunConfig, shape: ModelShape | None) -> None:
    """Hooks, context, data sources and the pretrained SAE against a model of ``shape`` (None: unknown)."""
    for field, name in hook_fields(cfg):
        check_hook(name, field, shape)
    if shape is not None:
        check_n_ctx(cfg.data.n_ctx, shape.n_ctx)
        check_architecture_fits(cfg, shape.d_model)
    check_source_exists(cfg.data.train, "data.train")
    check_source_exists(cfg.data.eval, "data.eval")
    check_held_out(cfg.data.train, cfg.data.eval)
    check_pretrained_path(cfg)


def preflight(cfg: RunConfig, resume: bool = False, how_to_resume: str = "--resume") -> ModelShape | None:
    """All checks possible without loading the model; returns the model's shape when known."""
    check_output_dir(cfg.output_dir, resume, how_to_resume)
    shape = model_shape(cfg.model)
    check_config(cfg, shape)
    return shape
