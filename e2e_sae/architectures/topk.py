"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

    c = TopK_k(ReLU(W_e (x - b_d) + b_e))           # the k largest per token, the rest 0

L0 <= k by construction (exactly k unless fewer than k pre-activations are positive), so there is no
sparsity penalty. Dead latents -- no firing (``c > 0``) in the last ``sae.dead_after_tokens`` training
tokens -- are trained by the AuxK loss (Gao et al. Appendix A.2): the ``k_aux = d_in // 2`` largest
values among the dead latents reconstruct the main reconstruction's error ``e = x - x_hat``
(detached) through the decoder without its bias. ``sae.auxk_form`` picks whose definition, as each
library writes it (docs/architectures.md, "AuxK"):

- ``saelens`` (the default; SAELens 6, whose form comes from EleutherAI's ``sae``): the dead set is
  chosen from the counts before this batch, the values are the raw pre-activations ``z`` (negative
  ones included), and

      auxk = min(n_dead / k_aux, 1) * mean_tokens ||W_d z_aux - e||^2 / d_in

  (SAELens's term divided by d_in, as every reconstruction term here is a mean over elements).
- ``gao`` (Gao et al.'s normalised form, as in their code openai/sparse_autoencoder and in
  dictionary_learning 0.1.0): the counts are updated with this batch before the dead set is chosen
  (a latent that fires in the batch is not dead in it), the values are ``ReLU(z)``, no ``n_dead``
  factor, and the error is divided by the residual's variance over the batch's tokens:

      auxk = mean_tokens ||W_d z_aux - e||^2 / mean_tokens ||e - mean_tokens(e)||^2

  Scale-free, as the normalised MSE that Gao et al.'s alpha = 1/32 weighs it against; under
  ``sae.input_normalization: mean_squared_norm`` our per-element MSE is exactly that
  (dictionary_learning's summed MSE on its unit-normalised inputs). 0 when the variance is 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from e2e_sae.architectures.base import Architecture, AuxTerm


def topk_activations(pre: Tensor, k: int) -> Tensor:
    """``TopK_k(ReLU(pre))`` along the last dim (ReLU after the selection: the same values)."""
    values, idx = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, idx, values.relu())


def auxk_loss(x: Tensor, x_hat: Tensor, pre: Tensor, w_dec: Tensor, dead: Tensor, form: str = "saelens") -> Tensor:
    """The AuxK term of ``form`` (module docstring) for ``dead [n_dict]`` bool (already the set that
    ``form`` chooses); 0 when no latent is dead."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    d_in = x.shape[-1]
    k_aux = d_in // 2
    values = pre if form == "saelens" else pre.relu()
    candidates = torch.where(dead[None], values, -torch.inf)
    top = candidates.topk(min(k_aux, n_dead), dim=-1, sorted=False)
    z_aux = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    residual = (x - x_hat).detach()
    error = (z_aux @ w_dec.t() - residual).pow(2).sum(-1).mean()
    if form == "saelens":
        return min(n_dead / k_aux, 1.0) * error / d_in
    variance = (residual - residual.mean(0)).pow(2).sum(-1).mean()
    return error / variance if bool(variance > 0) else pre.new_zeros(())


class DeadLatents(Architecture):
    """The TopK family's dead-latent bookkeeping: training tokens since each latent last fired."""

    tokens_since_fired: Tensor  # [n_dict] long (a buffer)

    def __init__(self, n_dict: int, aux_coeff: float, dead_after_tokens: int, auxk_form: str = "saelens"):
        super().__init__()
        self.aux_coeff = aux_coeff
        self.dead_after_tokens = dead_after_tokens
        self.auxk_form = auxk_form
        self.register_buffer("tokens_since_fired", torch.zeros(n_dict, dtype=torch.long))

    def dead(self) -> Tensor:
        return self.tokens_since_fired >= self.dead_after_tokens

    def auxk_dead(self, c: Tensor) -> Tensor:
        """The dead set AuxK trains on this batch ``c [tokens, n_dict]``: ``saelens`` from the counts
        before the batch; ``gao`` from the counts as :meth:`after_forward` will leave them."""
        if self.auxk_form == "saelens":
            return self.dead()
        fired = (c.detach() > 0).any(0)
        return (self.tokens_since_fired + c.shape[0] >= self.dead_after_tokens) & ~fired

    def aux_terms(self, x: Tensor, x_hat: Tensor, pre: Tensor, c: Tensor, w_dec: Tensor) -> list[AuxTerm]:
        if self.aux_coeff == 0:
            return []
        value = auxk_loss(x, x_hat, pre, w_dec, self.auxk_dead(c), self.auxk_form)
        return [AuxTerm("auxk", self.aux_coeff, value)]

    @torch.no_grad()
    def after_forward(self, pre: Tensor, c: Tensor) -> None:
        self.tokens_since_fired += c.shape[0]
        self.tokens_since_fired[(c > 0).any(0)] = 0


class TopK(DeadLatents):
    name = "topk"
    subtracts_b_dec = True

    def __init__(self, n_dict: int, k: int, aux_coeff: float, dead_after_tokens: int, auxk_form: str = "saelens"):
        super().__init__(n_dict, aux_coeff, dead_after_tokens, auxk_form)
        self.k = k

    def activate(self, pre: Tensor) -> Tensor:
        return topk_activations(pre, self.k)
