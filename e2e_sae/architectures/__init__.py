"""SAE architectures, one self-contained module each (encode activation, sparsity term, auxiliary
loss, running state, knobs), in the spirit of dictionary_learning's trainers: the SAE and the
training loop are the same for all. Definitions and conventions: docs/architectures.md.

- :mod:`.relu` -- ``relu``: Braun et al. 2024 (the paper's; the default)
- :mod:`.topk` -- ``topk``: Gao et al. 2024, with AuxK (SAELens's form or Gao et al.'s: ``sae.auxk_form``)
- :mod:`.batchtopk` -- ``batchtopk``: Bussmann et al. 2024
- :mod:`.jumprelu` -- ``jumprelu``: Rajamanoharan et al. 2024 (+ Gemma Scope 2's target-L0 penalty)
- :mod:`.matryoshka` -- ``matryoshka_batchtopk``: Bussmann et al. 2025
"""

from __future__ import annotations

from typing import Any

from e2e_sae.architectures.base import Architecture, AuxTerm
from e2e_sae.architectures.batchtopk import BatchTopK
from e2e_sae.architectures.jumprelu import JumpReLU
from e2e_sae.architectures.matryoshka import MatryoshkaBatchTopK
from e2e_sae.architectures.relu import ReLU
from e2e_sae.architectures.spec import ARCHITECTURES, prefix_sizes
from e2e_sae.architectures.topk import TopK

__all__ = ["ARCHITECTURES", "Architecture", "AuxTerm", "make_architecture", "saved_architecture"]


def make_architecture(
    name: str, knobs: dict[str, Any], n_dict: int, p_norm: float = 1.0, target_l0: float | None = None
) -> Architecture:
    """The architecture ``name`` with its (resolved) ``knobs`` for a dictionary of ``n_dict``."""
    if name == "relu":
        return ReLU(p_norm)
    if name == "jumprelu":
        return JumpReLU(n_dict, knobs["jumprelu_bandwidth"], knobs["jumprelu_init_threshold"], target_l0)
    dead = (knobs["aux_loss_coeff"], knobs["dead_after_tokens"])
    form = knobs["auxk_form"]
    if name == "topk":
        return TopK(n_dict, knobs["k"], *dead, auxk_form=form)
    if name == "batchtopk":
        return BatchTopK(n_dict, knobs["k"], *dead, knobs["topk_threshold_lr"], auxk_form=form)
    if name == "matryoshka_batchtopk":
        sizes = prefix_sizes(knobs["matryoshka_prefixes"], n_dict)
        return MatryoshkaBatchTopK(n_dict, knobs["k"], *dead, knobs["topk_threshold_lr"], sizes, auxk_form=form)
    raise ValueError(f"sae.architecture: unknown {name!r}; use one of {', '.join(ARCHITECTURES)}")


def saved_architecture(config: Any) -> str:
    """The architecture recorded in a checkpoint's config dict (``relu`` for checkpoints written
    before the field existed, and for files without a config, e.g. the authors')."""
    if not isinstance(config, dict):
        return "relu"
    return (config.get("sae") or {}).get("architecture") or "relu"
