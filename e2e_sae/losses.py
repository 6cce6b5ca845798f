"""The loss of the three training modes: the term configs, the mode presets, and the terms as pure
functions of tensors. Definitions: docs/metrics.md ("Training loss").

A new loss term means: a config field on :class:`LossConfig`, an entry in :meth:`LossConfig.active`,
its preset per mode in :data:`MODE_PRESETS`, and its function in :func:`total_loss`; nothing else.
Every tensor function takes activations shaped ``[batch, pos, ...]`` and returns a scalar.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from e2e_sae.strict import Strict


class SparsityLoss(Strict):
    coeff: float = Field(ge=0, description="phi: weight of the sparsity term phi * mean_tokens(||c||_p) / d_in")
    p_norm: float = Field(default=1.0, gt=0, description="p of the Lp norm of the dictionary activations c")


class CoeffLoss(Strict):
    coeff: float = Field(ge=0, description="weight of this term in the loss")


class DownstreamLoss(Strict):
    """MSE of downstream activations, spliced vs original: ``total_coeff / len(H) * sum_h MSE``.
    ``hook_positions`` default: every later layer's ``hook_resid_pre``."""

    total_coeff: float = Field(ge=0, description="beta: the terms' total weight, split evenly over the hook points")
    hook_positions: list[str] | None = Field(
        default=None, description="downstream hook points; default every later layer's hook_resid_pre"
    )


class LossConfig(Strict):
    """Loss terms, named as in the reference library. Missing terms are filled by the ``mode``
    preset; a term set explicitly overrides the preset."""

    sparsity: SparsityLoss = Field(description="the Lp sparsity penalty")
    out_to_in: CoeffLoss | None = Field(default=None, description="MSE(a_hat, a) at the SAE: the local loss")
    logits_kl: CoeffLoss | None = Field(default=None, description="KL(p_orig || p_spliced) on the logits, per token")
    in_to_orig: DownstreamLoss | None = Field(
        default=None, description="MSE of downstream activations, spliced vs original (e2e+ds)"
    )

    def active(self) -> dict[str, float]:
        """The reconstruction terms that are on (coefficient > 0), with their coefficients."""
        coeffs = {
            "out_to_in": self.out_to_in.coeff if self.out_to_in is not None else 0.0,
            "logits_kl": self.logits_kl.coeff if self.logits_kl is not None else 0.0,
            "in_to_orig": self.in_to_orig.total_coeff if self.in_to_orig is not None else 0.0,
        }
        return {term: coeff for term, coeff in coeffs.items() if coeff > 0}

    @property
    def needs_logits(self) -> bool:
        """Whether a loss term needs the spliced forward past the SAE (KL or downstream MSE)."""
        return bool(self.active().keys() & {"logits_kl", "in_to_orig"})


# What each training mode switches on; a term set explicitly in a run config overrides its preset.
MODE_PRESETS: dict[str, dict[str, Any]] = {
    "local": {"out_to_in": {"coeff": 1.0}, "logits_kl": None, "in_to_orig": None},
    "e2e": {"out_to_in": None, "logits_kl": {"coeff": 1.0}, "in_to_orig": None},
    # The paper's e2e+ds: KL coeff 0.5, total downstream MSE coeff 2.5.
    "e2e+ds": {"out_to_in": None, "logits_kl": {"coeff": 0.5}, "in_to_orig": {"total_coeff": 2.5}},
}


# The fused SAE kernels (e2e_sae.sae_kernels) differentiate the L1 penalty only.
FUSED_KERNEL_P_NORM = 1.0


def check_kernel_supports(kernel: str, p_norm: float) -> None:
    """Refuse a fused kernel (``sparse``/``dense``) for a penalty other than L1; ValueError names the fix."""
    if kernel in ("sparse", "dense") and p_norm != FUSED_KERNEL_P_NORM:
        raise ValueError(
            f"train.sae_kernel: {kernel!r} implements the L1 penalty only "
            f"(loss.sparsity.p_norm is {p_norm}); use auto or autograd"
        )


def mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean over all elements of ``(x_hat - x)^2``."""
    return F.mse_loss(x_hat.float(), x.float())


OrigLogProbs = tuple[Tensor, Tensor]  # (log p_orig, p_orig): fp32 [batch, pos, vocab], no grad


def orig_log_probs(logits_orig: Tensor) -> OrigLogProbs:
    """``(log p_orig, p_orig)`` of the clean logits, in fp32. Computed once per clean pass and shared by
    every member of a group: the KL's backward keeps ``p_orig`` (a ``batch x pos x vocab`` fp32
    tensor, 1.6 GB at GPT-2 small, micro-batch 8, n_ctx 1024), so K members computing their own
    would hold K copies."""
    logp_orig = F.log_softmax(logits_orig.float(), dim=-1)
    return logp_orig, logp_orig.exp()


def kl_from_log_probs(orig: OrigLogProbs, logits_spliced: Tensor) -> Tensor:
    """``KL(p_orig || p_spliced) = sum_v p_orig (log p_orig - log p_spliced)`` for each token: ``[batch, pos]``."""
    logp_orig, p_orig = orig
    logp_spliced = F.log_softmax(logits_spliced.float(), dim=-1)
    return (p_orig * (logp_orig - logp_spliced)).sum(-1)


def kl_per_token(logits_orig: Tensor, logits_spliced: Tensor) -> Tensor:
    """:func:`kl_from_log_probs` from the clean logits: ``[batch, pos]``."""
    return kl_from_log_probs(orig_log_probs(logits_orig), logits_spliced)


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
    orig: OrigLogProbs | None = None,
    logits_spliced: Tensor | None = None,
    downstream_orig: dict[str, Tensor] | None = None,
    downstream_spliced: dict[str, Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the configured terms, and each unweighted term (detached) for logging.

    ``c_norm`` is the mean over tokens of ``||c||_p`` as the SAE computed it
    (:attr:`e2e_sae.sae.SAEOutput.c_norm`, fused with its backward); the sparsity term is
    ``c_norm / d_in``, i.e. ``mean_tokens(||c||_p) / d_in``. ``orig``: :func:`orig_log_probs` of the
    clean logits, needed by the KL term.
    """
    terms: dict[str, Tensor] = {"sparsity": c_norm / acts.shape[-1]}
    loss = cfg.sparsity.coeff * terms["sparsity"]
    active = cfg.active()
    if "out_to_in" in active:
        terms["out_to_in"] = mse(acts_hat, acts)
    if "logits_kl" in active:
        assert orig is not None and logits_spliced is not None
        terms["logits_kl"] = kl_from_log_probs(orig, logits_spliced).mean()
    if "in_to_orig" in active:
        assert downstream_orig is not None and downstream_spliced is not None
        terms["in_to_orig"] = downstream_mse(downstream_spliced, downstream_orig)
    for term, coeff in active.items():
        loss = loss + coeff * terms[term]
    return loss, {f"loss/{k}": v.detach() for k, v in terms.items()}
