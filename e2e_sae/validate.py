"""Checks that need more than the config's own types, run before any model or data is loaded.

Each failure is a :class:`ConfigError` with one line naming the field and the fix. Nothing here
writes to disk, so a bad config never touches an existing run directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from e2e_sae.config import ConfigError, ModelConfig, RunConfig
from e2e_sae.data import check_held_out, check_source_exists

# Hook points of a TransformerLens block, as named by TransformerBridge's aliases.
BLOCK_HOOKS = (
    "hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
    "hook_mlp_in", "hook_attn_in",
)
GLOBAL_HOOKS = ("hook_embed", "hook_pos_embed")


@dataclass(frozen=True)
class ModelShape:
    n_layers: int
    n_ctx: int


def model_shape(model: ModelConfig) -> ModelShape | None:
    """Layers and context of the model without loading weights; None where unknown offline."""
    if model.native is not None:
        return ModelShape(int(model.native["n_layers"]), int(model.native["n_ctx"]))
    name = model.name or ""
    path = None
    if name.startswith("builtin:"):
        from e2e_sae.builtin import builtin_model_path

        try:
            path = builtin_model_path(name.split(":", 1)[1])
        except ValueError as err:
            raise ConfigError(f"model.name: {err}") from None
    elif name.endswith(".pt"):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"model.name: checkpoint {name} does not exist; fix the path")
    if path is not None:
        import torch

        cfg = torch.load(path, map_location="cpu", weights_only=True)["cfg"]
        return ModelShape(int(cfg["n_layers"]), int(cfg["n_ctx"]))
    try:
        from transformers import AutoConfig

        hf = AutoConfig.from_pretrained(name)
    except Exception:  # no network or unknown name: the loaded model is checked instead
        return None
    n_layers = getattr(hf, "n_layer", None) or getattr(hf, "num_hidden_layers", None)
    n_ctx = getattr(hf, "n_positions", None) or getattr(hf, "max_position_embeddings", None)
    return ModelShape(int(n_layers), int(n_ctx)) if n_layers and n_ctx else None


def valid_hook_names(n_layers: int) -> list[str]:
    return [*GLOBAL_HOOKS, *(f"blocks.{i}.{h}" for i in range(n_layers) for h in BLOCK_HOOKS)]


def check_hook(name: str, field: str, shape: ModelShape | None) -> None:
    m = re.fullmatch(r"blocks\.(\d+)\.(\w+)", name)
    if m and shape is not None and int(m.group(1)) >= shape.n_layers:
        raise ConfigError(
            f"{field}: layer {m.group(1)} is out of range; the model has layers 0..{shape.n_layers - 1}"
        )
    if not (name in GLOBAL_HOOKS or (m and m.group(2) in BLOCK_HOOKS)):
        raise ConfigError(
            f"{field}: unknown hook point {name!r}; use one of {', '.join(GLOBAL_HOOKS)} or "
            f"blocks.<layer>.<{'|'.join(BLOCK_HOOKS)}>"
        )


def check_output_dir(output_dir: Path, resume: bool) -> None:
    if resume:
        return
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ConfigError(
            f"output_dir: {output_dir} already holds files; pass --resume to continue that run "
            "or choose a new output_dir (nothing was written)"
        )


def hook_fields(cfg: RunConfig) -> list[tuple[str, str]]:
    """(config field, hook name) of every hook point the run uses: the SAE's and the downstream ones."""
    downstream = (cfg.loss.in_to_orig.hook_positions or []) if cfg.loss.in_to_orig is not None else []
    return [("sae.position", cfg.sae.position)] + [
        (f"loss.in_to_orig.hook_positions.{i}", h) for i, h in enumerate(downstream)
    ]


def check_n_ctx(n_ctx: int, model_n_ctx: int) -> None:
    if n_ctx > model_n_ctx:
        raise ConfigError(f"data.n_ctx: {n_ctx} exceeds the model's context {model_n_ctx}; lower it")


def check_pretrained_path(cfg: RunConfig) -> None:
    if cfg.sae.pretrained_path is not None and not cfg.sae.pretrained_path.is_file():
        raise ConfigError(f"sae.pretrained_path: {cfg.sae.pretrained_path} does not exist; fix the path")


def check_config(cfg: RunConfig, shape: ModelShape | None) -> None:
    """Hooks, context, data sources and the pretrained SAE against a model of ``shape`` (None: unknown)."""
    for field, name in hook_fields(cfg):
        check_hook(name, field, shape)
    if shape is not None:
        check_n_ctx(cfg.data.n_ctx, shape.n_ctx)
    check_source_exists(cfg.data.train, "data.train")
    check_source_exists(cfg.data.eval, "data.eval")
    check_held_out(cfg.data.train, cfg.data.eval)
    check_pretrained_path(cfg)


def preflight(cfg: RunConfig, resume: bool = False) -> ModelShape | None:
    """All checks possible without loading the model; returns the model's shape when known."""
    check_output_dir(cfg.output_dir, resume)
    shape = model_shape(cfg.model)
    check_config(cfg, shape)
    return shape
