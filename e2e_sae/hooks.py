"""Hook-point names of a TransformerLens model: the one place that parses and formats them.

An SAE sits at one hook point (``blocks.6.hook_resid_pre``); the e2e+ds loss reads the residual
stream at later ones. Names are matched exactly, block index and all: the reference library matched
by substring, so ``blocks.1`` also caught ``blocks.10``.
"""

from __future__ import annotations

import re

# Hook points of a TransformerLens block, as named by TransformerBridge's aliases.
BLOCK_HOOKS = (
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_attn_out",
    "hook_mlp_out",
    "hook_mlp_in",
    "hook_attn_in",
)
GLOBAL_HOOKS = ("hook_embed", "hook_pos_embed")

_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.(\w+)$")


def resid_pre(layer: int) -> str:
    """The residual stream entering block ``layer``: where the paper places its SAEs."""
    return f"blocks.{layer}.hook_resid_pre"


def parse_block_hook(name: str) -> tuple[int, str] | None:
    """``"blocks.6.hook_resid_pre"`` -> ``(6, "hook_resid_pre")``; None for a non-block name."""
    m = _BLOCK_HOOK.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def hook_layer(name: str) -> int | None:
    """Block index of a hook name, or None for the embedding hooks."""
    parsed = parse_block_hook(name)
    return parsed[0] if parsed else None


def resid_pre_layer(name: str) -> int | None:
    """``L`` if ``name`` is ``blocks.L.hook_resid_pre`` (the spliced pass can then start at block L)."""
    parsed = parse_block_hook(name)
    return parsed[0] if parsed and parsed[1] == "hook_resid_pre" else None


def is_known_hook(name: str) -> bool:
    """Whether ``name`` is a hook point that any TransformerLens model of enough layers has."""
    parsed = parse_block_hook(name)
    return name in GLOBAL_HOOKS or (parsed is not None and parsed[1] in BLOCK_HOOKS)


def valid_hook_names(n_layers: int) -> list[str]:
    return [*GLOBAL_HOOKS, *(f"blocks.{i}.{h}" for i in range(n_layers) for h in BLOCK_HOOKS)]


def downstream_hooks(position: str, n_layers: int) -> list[str]:
    """The paper's default downstream set H for e2e+ds: every later layer's ``hook_resid_pre``; for
    an SAE in the last block, which has no later ones, the final residual ``hook_resid_post``."""
    layer = hook_layer(position)
    start = 0 if layer is None else layer + 1
    return [resid_pre(i) for i in range(start, n_layers)] or [f"blocks.{n_layers - 1}.hook_resid_post"]


def hook_slug(name: str) -> str:
    """A file-name-safe form of a hook name (letters, digits, ``._-`` kept; anything else ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)
