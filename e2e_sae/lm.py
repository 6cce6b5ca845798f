"""Loading the frozen language model that an SAE is spliced into.

Every model is a TransformerLens 4 ``TransformerBridge``:

- ``builtin:<name>``: the model that ships with this package (see ``e2e_sae.builtin``);
- a ``.pt`` file written by :func:`save_native_lm`: a TL-native model (config + weights);
- a local directory or a HuggingFace name (``gpt2``): ``boot_transformers``;
- a config dict (``model.native`` in a run config): a randomly initialised TL-native model,
  for tests and benchmarks.

The model is returned frozen (``requires_grad_(False)``, ``eval()``): only SAE parameters train.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge

import transformer_lens.model_bridge.sources.native  # noqa: F401  (registers boot_native)

NATIVE_LM_FORMAT = "e2e_sae.native_lm/1"
BUILTIN_PREFIX = "builtin:"


def boot_native_lm(cfg: dict[str, Any], device: str | torch.device = "cpu") -> TransformerBridge:
    """A randomly initialised TL-native transformer from a config dict (seeded by ``cfg['seed']``)."""
    return TransformerBridge.boot_native(dict(cfg), device=device)


def save_native_lm(model: TransformerBridge, cfg: dict[str, Any], path: str | Path, fp16: bool = True) -> None:
    """Write a TL-native model as one file: its boot config and its weights (fp16 by default)."""
    state = {k: (v.half() if fp16 and v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": NATIVE_LM_FORMAT, "cfg": dict(cfg), "state_dict": state}, tmp)
    os.replace(tmp, path)


def load_native_lm(path: str | Path, device: str | torch.device = "cpu") -> TransformerBridge:
    """Load a file written by :func:`save_native_lm` (weights upcast to fp32)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != NATIVE_LM_FORMAT:
        raise ValueError(f"{path} is not a native LM checkpoint written by e2e_sae.lm.save_native_lm")
    model = boot_native_lm(blob["cfg"], device="cpu")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    return model.to(device)


def load_language_model(
    name: str | None = None,
    native: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> TransformerBridge:
    """Load the frozen language model named by a run config's ``model`` section."""
    if native is not None:
        model = boot_native_lm(native, device=device)
    elif name is None:
        raise ValueError("model: set either model.name or model.native")
    elif name.startswith(BUILTIN_PREFIX):
        from e2e_sae.builtin import builtin_model_path

        model = load_native_lm(builtin_model_path(name[len(BUILTIN_PREFIX):]), device=device)
    elif name.endswith(".pt") and Path(name).is_file():
        model = load_native_lm(name, device=device)
    else:
        model = TransformerBridge.boot_transformers(name, device=device)
    model.requires_grad_(False)
    model.eval()
    return model
