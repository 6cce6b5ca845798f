"""Which tokenizer turns raw text into tokens for a run (pre-tokenised data needs none)."""

from __future__ import annotations

from typing import Any

from e2e_sae.builtin.assets import builtin_tokenizer
from e2e_sae.builtin.catalog import parse_name
from e2e_sae.config import ConfigError, RunConfig


def resolve_tokenizer(cfg: RunConfig, model: Any) -> Any:
    """``data.tokenizer`` if set (HF name or ``builtin:<name>``), else the built-in model's
    tokenizer for ``builtin:`` models, else the model's own tokenizer (may be None)."""
    name = cfg.data.tokenizer
    if name is None and parse_name(cfg.model.name) is not None:
        name = cfg.model.name
    if name is None:
        return _usable(getattr(model, "tokenizer", None))
    if (builtin := parse_name(name)) is not None:
        return builtin_tokenizer(builtin)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def _usable(tokenizer: Any) -> Any:
    """None for a missing tokenizer and for the empty stand-in (``vocab_size`` 0) that
    TransformerBridge attaches when a model directory holds no tokenizer files."""
    if tokenizer is None or getattr(tokenizer, "vocab_size", 1) == 0:
        return None
    return tokenizer


def check_tokenizer(cfg: RunConfig, tokenizer: Any, eval_only: bool = False) -> None:
    """Raw-text data needs a tokenizer: fail with the field and the fix before any training
    (``eval_only``: only ``data.eval`` is read, as by ``e2e_sae.evaluate``)."""
    if tokenizer is not None:
        return
    from e2e_sae.data import is_raw_text

    sources = [("data.eval", cfg.data.eval)] + ([] if eval_only else [("data.train", cfg.data.train)])
    for field, source in sources:
        if is_raw_text(source):
            raise ConfigError(
                f"data.tokenizer: {field} ({source.name}) is raw text but the model "
                f"{cfg.model.name or 'model.native'} has no tokenizer; set data.tokenizer to a tokenizer "
                "name or directory, or use pre-tokenised input_ids data"
            )
