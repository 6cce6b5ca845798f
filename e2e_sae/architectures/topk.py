"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

    c = TopK_k(ReLU(W_e (x - b_d) + b_e))           # the k largest per token, the rest 0

L0 <= k by construction (exactly k unless fewer than k pre-activations are positive), so there is no
sparsity penalty. Dead latents are revived by the AuxK loss (Gao et al. Appendix A.2, as SAELens and
dictionary_learning define it): the ``k_aux = d_in // 2`` largest pre-activations among the dead
latents (no firing in the last ``sae.dead_after_tokens`` training tokens) reconstruct the main
reconstruction's error ``e = x - x_hat`` (detached) through the decoder without its bias:

    auxk = min(n_dead / k_aux, 1) * mean_tokens ||W_d z_aux - e||^2 / d_in

(SAELens's term divided by d_in, as every reconstruction term here is a mean over elements).
"""

from __future__ import annotations

import torch
from torch import Tensor

from e2e_sae.architectures.base import Architecture, AuxTerm


def topk_activations(pre: Tensor, k: int) -> Tensor:
    """``TopK_k(ReLU(pre))`` along the last dim (ReLU after the selection: the same values)."""
    values, idx = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, idx, values.relu())


def auxk_loss(x: Tensor, x_hat: Tensor, pre: Tensor, w_dec: Tensor, dead: Tensor) -> Tensor:
    """The AuxK term (module docstring) for ``dead [n_dict]`` bool; 0 when no latent is dead."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    d_in = x.shape[-1]
    k_aux = d_in // 2
    scale = min(n_dead / k_aux, 1.0)
    candidates = torch.where(dead[None], pre, -torch.inf)
    top = candidates.topk(min(k_aux, n_dead), dim=-1, sorted=False)
    z_aux = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    residual = (x - x_hat).detach()
    return scale * (z_aux @ w_dec.t() - residual).pow(2).sum(-1).mean() / d_in


class DeadLatents(Architecture):
    """The TopK family's dead-latent bookkeeping: training tokens since each latent last fired."""

    tokens_since_fired: Tensor  # [n_dict] long (a buffer)

    def __init__(self, n_dict: int, aux_coeff: float, dead_after_tokens: int):
        super().__init__()
        self.aux_coeff = aux_coeff
        self.dead_after_tokens = dead_after_tokens
        self.register_buffer("tokens_since_fired", torch.zeros(n_dict, dtype=torch.long))

    def dead(self) -> Tensor:
        return self.tokens_since_fired >= self.dead_after_tokens

    def aux_terms(self, x: Tensor, x_hat: Tensor, pre: Tensor, c: Tensor, w_dec: Tensor) -> list[AuxTerm]:
        if self.aux_coeff == 0:
            return []
        return [AuxTerm("auxk", self.aux_coeff, auxk_loss(x, x_hat, pre, w_dec, self.dead()))]

    @torch.no_grad()
    def after_forward(self, pre: Tensor, c: Tensor) -> None:
        self.tokens_since_fired += c.shape[0]
        self.tokens_since_fired[(c > 0).any(0)] = 0


class TopK(DeadLatents):
    name = "topk"
    subtracts_b_dec = True

    def __init__(self, n_dict: int, k: int, aux_coeff: float, dead_after_tokens: int):
        super().__init__(n_dict, aux_coeff, dead_after_tokens)
        self.k = k

    def activate(self, pre: Tensor) -> Tensor:
        return topk_activations(pre, self.k)
