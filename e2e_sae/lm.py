"""Loading the frozen language model that an SAE is spliced into.

Every model is a TransformerLens 4 ``TransformerBridge``:

- ``builtin:<name>``: the model that ships with this package (see ``e2e_sae.builtin``);
- a ``.pt`` file written by :func:`e2e_sae.native_lm.save_native_lm`: a TL-native model (config + weights);
- a local directory or a HuggingFace name (``gpt2``): ``boot_transformers``, then by default
  ``enable_compatibility_mode()``: TransformerLens' own HookedTransformer-equivalent weight
  processing (fold LayerNorm, centre writing weights and unembedding, fold value biases), the
  coordinates the paper's SAEs were trained in (docs/weight_processing.md);
- a config dict (``model.native`` in a run config): a randomly initialised TL-native model,
  for tests and benchmarks.

The model is returned frozen (``requires_grad_(False)``, ``eval()``): only SAE parameters train.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge

from e2e_sae.builtin.assets import builtin_model_path
from e2e_sae.builtin.catalog import parse_name
from e2e_sae.native_lm import boot_native_lm, load_native_lm


def _hf_architecture(name: str) -> str:
    """The ``architectures`` entry of a local model directory's config.json (for error messages)."""
    config = Path(name) / "config.json"
    if config.is_file():
        return ", ".join(json.loads(config.read_text()).get("architectures") or ["unknown"])
    return "unknown"


def boot_hf_lm(name: str, weight_processing: str, device: str | torch.device = "cpu") -> TransformerBridge:
    """``boot_transformers`` and, for ``hooked_transformer``, TransformerLens' compatibility mode
    with its defaults (= ``HookedTransformer.from_pretrained``'s processing). Hook names, and
    ``start_at_layer`` / ``stop_at_layer``, are the same with and without it."""
    from e2e_sae.config import ConfigError

    try:
        model = TransformerBridge.boot_transformers(name, device=device)
    except ValueError as err:
        if "supported architecture" not in str(err):
            raise
        raise ConfigError(
            f"model.name: TransformerBridge cannot load {name} (architecture {_hf_architecture(name)} is not "
            "supported by TransformerLens 4); use a supported architecture such as GPT-2, GPT-NeoX/Pythia or Llama"
        ) from None
    if weight_processing == "hooked_transformer":
        try:
            model.enable_compatibility_mode(disable_warnings=True)
        except (RuntimeError, NotImplementedError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(
                f"model.weight_processing: TransformerLens cannot apply HookedTransformer processing to {name} "
                f"({first}); set model.weight_processing=none"
            ) from None
    return model


def load_language_model(
    name: str | None = None,
    native: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    weight_processing: str = "none",
) -> TransformerBridge:
    """Load the frozen language model named by a run config's ``model`` section
    (``weight_processing`` applies to HF models only; see :func:`boot_hf_lm`)."""
    if native is not None:
        model = boot_native_lm(native, device=device)
    elif name is None:
        raise ValueError("model: set either model.name or model.native")
    elif (builtin := parse_name(name)) is not None:
        model = load_native_lm(builtin_model_path(builtin), device=device)
    elif name.endswith(".pt") and Path(name).is_file():
        model = load_native_lm(name, device=device)
    else:
        model = boot_hf_lm(name, weight_processing, device=device)
    model.requires_grad_(False)
    model.eval()
    return model
