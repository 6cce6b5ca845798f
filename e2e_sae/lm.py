"""Loading the frozen language model that an SAE is spliced into.

Every model is a TransformerLens 4 ``TransformerBridge``:

- ``builtin:<name>``: the model that ships with this package (see ``e2e_sae.builtin``);
- a ``.pt`` file written by :func:`e2e_sae.native_lm.save_native_lm`: a TL-native model (config + weights);
- a local directory or a HuggingFace name (``gpt2``): ``boot_transformers``;
- a config dict (``model.native`` in a run config): a randomly initialised TL-native model,
  for tests and benchmarks.

The model is returned frozen (``requires_grad_(False)``, ``eval()``): only SAE parameters train.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge

from e2e_sae.builtin.assets import builtin_model_path
from e2e_sae.builtin.catalog import parse_name
from e2e_sae.native_lm import boot_native_lm, load_native_lm


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
    elif parse_name(name) is not None:
        model = load_native_lm(builtin_model_path(parse_name(name)), device=device)
    elif name.endswith(".pt") and Path(name).is_file():
        model = load_native_lm(name, device=device)
    else:
        model = TransformerBridge.boot_transformers(name, device=device)
    model.requires_grad_(False)
    model.eval()
    return model
