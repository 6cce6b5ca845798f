"""Loss terms of the three training modes, as pure functions of tensors (DESIGN.md, "The method").

Every function takes activations shaped ``[batch, pos, ...]`` and returns a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from e2e_sae.config import LossConfig


def sparsity_loss(c: Tensor, p_norm: float, d_in: int) -> Tensor:
    """``mean_tokens(||c||_p) / d_in`` for dictionary activations ``c [batch, pos, n_dict]``."""
    return torch.linalg.vector_norm(c, ord=p_norm, dim=-1).mean() / d_in


def mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean over all elements of ``(x_hat - x)^2``."""
    return F.mse_loss(x_hat.float(), x.float())


def kl_per_token(logits_orig: Tensor, logits_spliced: Tensor) -> Tensor:
    """``KL(p_orig || p_spliced) = sum_v p_orig (log p_orig - log p_spliced)`` for each token: ``[batch, pos]``."""
    logp_orig = F.log_softmax(logits_orig.float(), dim=-1)
    logp_spliced = F.log_softmax(logits_spliced.float(), dim=-1)
    return (logp_orig.exp() * (logp_orig - logp_spliced)).sum(-1)


def logits_kl(logits_orig: Tensor, logits_spliced: Tensor) -> Tensor:
    """:func:`kl_per_token`, mean over tokens."""
    return kl_per_token(logits_orig, logits_spliced).mean()


def downstream_mse(spliced: dict[str, Tensor], orig: dict[str, Tensor]) -> Tensor:
    """``1/len(H) * sum_h MSE(h_spliced, h_orig)`` over the downstream hook points ``H``."""
    return torch.stack([mse(spliced[h], orig[h]) for h in orig]).mean()


def total_loss(
    cfg: LossConfig,
    *,
    c_norm: Tensor,
    acts: Tensor,
    acts_hat: Tensor,
    logits_orig: Tensor | None = None,
    logits_spliced: Tensor | None = None,
    downstream_orig: dict[str, Tensor] | None = None,
    downstream_spliced: dict[str, Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the configured terms, and each unweighted term (detached) for logging.

    ``c_norm`` is the mean over tokens of ``||c||_p`` as the SAE computed it
    (:attr:`e2e_sae.sae.SAEOutput.c_norm`, fused with its backward); the sparsity term is
    ``c_norm / d_in``, i.e. :func:`sparsity_loss`.
    """
    terms: dict[str, Tensor] = {"sparsity": c_norm / acts.shape[-1]}
    loss = cfg.sparsity.coeff * terms["sparsity"]
    active = cfg.active()
    if "out_to_in" in active:
        terms["out_to_in"] = mse(acts_hat, acts)
    if "logits_kl" in active:
        assert logits_orig is not None and logits_spliced is not None
        terms["logits_kl"] = logits_kl(logits_orig, logits_spliced)
    if "in_to_orig" in active:
        assert downstream_orig is not None and downstream_spliced is not None
        terms["in_to_orig"] = downstream_mse(downstream_spliced, downstream_orig)
    for term, coeff in active.items():
        loss = loss + coeff * terms[term]
    return loss, {f"loss/{k}": v.detach() for k, v in terms.items()}
