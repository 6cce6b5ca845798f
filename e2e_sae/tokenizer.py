"""Which tokenizer turns raw text into tokens for a run (pre-tokenised data needs none)."""

from __future__ import annotations

from typing import Any

from e2e_sae.config import RunConfig


def resolve_tokenizer(cfg: RunConfig, model: Any) -> Any:
    """``data.tokenizer`` if set (HF name or ``builtin:<name>``), else the built-in model's
    tokenizer for ``builtin:`` models, else the model's own tokenizer (may be None)."""
    name = cfg.data.tokenizer
    if name is None and cfg.model.name and cfg.model.name.startswith("builtin:"):
        name = cfg.model.name
    if name is None:
        return getattr(model, "tokenizer", None)
    if name.startswith("builtin:"):
        from e2e_sae.builtin import builtin_tokenizer

        return builtin_tokenizer(name.split(":", 1)[1])
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)
