"""TL-native language models as single files: a boot config plus weights.

The built-in model ships in this format; tests and benchmarks boot random ones from a config dict.
Imports nothing else of the package (the built-in model's builder writes these files).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import transformer_lens.model_bridge.sources.native  # noqa: F401  (registers boot_native)
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.sources import boot_native

NATIVE_LM_FORMAT = "e2e_sae.native_lm/1"


def boot_native_lm(cfg: dict[str, Any], device: str | torch.device = "cpu") -> TransformerBridge:
    """A randomly initialised TL-native transformer from a config dict (seeded by ``cfg['seed']``)."""
    return boot_native(dict(cfg), device=device)  # TransformerBridge.boot_native, typed


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
        raise ValueError(f"{path} is not a native LM checkpoint written by e2e_sae.native_lm.save_native_lm")
    model = boot_native_lm(blob["cfg"], device="cpu")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    return model.to(device)
