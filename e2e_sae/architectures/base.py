"""What every SAE architecture provides: the activation function on the encoder's pre-activations,
its sparsity penalty, its auxiliary loss terms and its running state; the SAE (:mod:`e2e_sae.sae`)
and the loop stay the same for all.

An architecture is an ``nn.Module`` held by the SAE as ``sae.arch``: its parameters (JumpReLU's
threshold) and buffers (BatchTopK's threshold, the TopK family's dead-latent counters) are part of
the SAE's state dict, hence of every checkpoint, so a resumed run continues them exactly. ReLU has
none, so a ReLU SAE's state dict is the reference library's.

Shapes: ``pre`` and ``c`` are ``[tokens, n_dict]`` (the SAE flattens batch and position), inputs
``x`` and reconstructions ``[tokens, d_in]``; ``w_dec`` are the unit-norm dictionary elements
``[d_in, n_dict]``. Definitions and conventions: docs/architectures.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class AuxTerm:
    """An architecture's loss term besides the mode's: ``coeff * value`` joins the loss, ``value``
    is logged as ``loss/<name>``."""

    name: str
    coeff: float
    value: Tensor


class Architecture(nn.Module):
    """The ReLU-free part of an SAE (see the module docstring); subclasses override what differs."""

    name = "base"
    # Gao et al.'s encoder reads x - b_dec (the decoder bias as the input's centre).
    subtracts_b_dec = False

    def activate(self, pre: Tensor) -> Tensor:
        """The dictionary activations ``c`` from the pre-activations (training or eval: ``self.training``)."""
        raise NotImplementedError

    def penalty(self, pre: Tensor, c: Tensor) -> Tensor | None:
        """Per-token sparsity penalty, mean over tokens (weighted by ``loss.sparsity.coeff / d_in``),
        or None when the architecture has none (L0 fixed by k)."""
        return None

    def aux_terms(self, x: Tensor, x_hat: Tensor, pre: Tensor, c: Tensor, w_dec: Tensor) -> list[AuxTerm]:
        """Loss terms besides reconstruction and sparsity (training only), in the SAE's input space."""
        return []

    def prefix_sizes(self) -> list[int]:
        """Sizes of the inner nested prefixes that reconstruct on their own (Matryoshka); none here."""
        return []

    def after_forward(self, pre: Tensor, c: Tensor) -> None:
        """Update the running state after a training forward (no gradient)."""

    def eval_info(self) -> dict[str, float | bool]:
        """What the eval metrics should say about how the SAE encoded at evaluation."""
        return {}
