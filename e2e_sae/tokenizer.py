"""Which tokenizer turns raw text into tokens for a run (pre-tokenised data needs none)."""

from __future__ import annotations

from typing import Any

from e2e_sae.builtin.assets import builtin_tokenizer
from e2e_sae.builtin.catalog import parse_name
from e2e_sae.config import RunConfig


def resolve_tokenizer(cfg: RunConfig, model: Any) -> Any:
    """``data.tokenizer`` if set (HF name or ``builtin:<name>``), else the built-in model's
    tokenizer for ``builtin:`` models, else the model's own tokenizer (may be None)."""
    name = cfg.data.tokenizer
    if name is None and parse_name(cfg.model.name) is not None:
        name = cfg.model.name
    if name is None:
        return getattr(model, "tokenizer", None)
    if parse_name(name) is not None:
        return builtin_tokenizer(parse_name(name))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)
