"""The sizes of a language model, read from whichever config describes it (defined once).

Configs are checked against ``n_layers`` and ``n_ctx`` before any weights load; the benchmark counts
FLOPs from the rest; the reference comparison rebuilds the model from it. Imports nothing else of the
package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    n_layers: int
    n_ctx: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int

    @classmethod
    def from_tl(cls, cfg: Any) -> ModelShape:
        """From a TransformerLens config object or a TL-native boot dict (``model.native``)."""

        def get(key: str) -> Any:
            return cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)

        d_model, n_heads = int(get("d_model")), int(get("n_heads"))
        return cls(
            int(get("n_layers")),
            int(get("n_ctx")),
            d_model,
            n_heads,
            int(get("d_head") or d_model // n_heads),
            int(get("d_mlp") or 4 * d_model),
            int(get("d_vocab")),
        )

    @classmethod
    def from_hf(cls, hf: Any) -> ModelShape | None:
        """From a ``transformers`` config (GPT-2 or Llama/NeoX-style names); None if layers or context are unknown."""

        def first(*names: str) -> Any:
            return next((getattr(hf, n) for n in names if getattr(hf, n, None) is not None), None)

        n_layers, n_ctx = first("n_layer", "num_hidden_layers"), first("n_positions", "max_position_embeddings")
        if not (n_layers and n_ctx and n_ctx > 0):
            return None
        d_model = int(first("n_embd", "hidden_size") or 0)
        n_heads = int(first("n_head", "num_attention_heads") or 0)
        d_head = int(first("head_dim") or (d_model // n_heads if n_heads else 0))
        return cls(
            int(n_layers),
            int(n_ctx),
            d_model,
            n_heads,
            d_head,
            int(first("n_inner", "intermediate_size") or 4 * d_model),
            int(first("vocab_size") or 0),
        )
