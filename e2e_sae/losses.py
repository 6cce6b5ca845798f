"""The loss of the three training modes: the term configs, the mode presets, and the terms as pure
functions of tensors. Definitions: docs/metrics.md ("Training loss").

A new loss term means: a config field on :class:`LossConfig`, an entry in :meth:`LossConfig.active`,
its preset per mode in :data:`MODE_PRESETS`, and its function in :func:`total_loss`; nothing else.
Every tensor function takes activations shaped ``[batch, pos, ...]`` and returns a scalar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from e2e_sae.strict import Strict

if TYPE_CHECKING:
    from e2e_sae.architectures.base import AuxTerm


class SparsityLoss(Strict):
    coeff: float = Field(
        ge=0,
        description="phi: weight of the sparsity term phi * mean_tokens(penalty) / d_in; the penalty is ||c||_p "
        "(relu) or L0 (jumprelu)",
    )
    p_norm: float = Field(default=1.0, gt=0, description="relu: p of the Lp norm of the dictionary activations c")
    target_l0: float | None = Field(
        default=None,
        gt=0,
        description="jumprelu: penalise 2/T (L0 - T)^2 around this target L0 T (Gemma Scope 2) instead of L0 itself",
    )


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

    sparsity: SparsityLoss | None = Field(
        default=None,
        description="the sparsity penalty of relu and jumprelu (the topk family has none: k sets L0)",
    )
    out_to_in: CoeffLoss | None = Field(default=None, description="MSE(a_hat, a) at the SAE: the local loss")
    logits_kl: CoeffLoss | None = Field(default=None, description="KL(p_orig || p_spliced) on the logits, per token")
    in_to_orig: DownstreamLoss | None = Field(
        default=None, description="MSE of downstream activations, spliced vs original (e2e+ds)"
    )
    balance_kl_to_mse: bool = Field(
        default=False,
        description="weigh the KL term each step by alpha = MSE / KL (both detached, MSE of out_to_in), so it "
        "contributes as much as the MSE and a sparsity coefficient tuned on MSE carries over (Karvonen 2025's "
        "KL fine-tune); needs out_to_in and logits_kl on",
    )

    @model_validator(mode="after")
    def _balance_needs_both(self) -> LossConfig:
        if self.balance_kl_to_mse and not {"out_to_in", "logits_kl"} <= self.active().keys():
            raise ValueError(
                "balance_kl_to_mse: balances logits_kl against out_to_in, so both must be on; set "
                "loss.out_to_in.coeff and loss.logits_kl.coeff (e.g. 1.0 each)"
            )
        return self

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


@dataclass
class Reconstruction:
    """One reconstruction of the SAE input and what the model computed from it past the SAE."""

    acts_hat: Tensor  # [batch, pos, d_in]
    logits: Tensor | None = None  # [batch, pos, vocab], when the loss needs them
    downstream: dict[str, Tensor] = field(default_factory=dict)


def reconstruction_terms(
    cfg: LossConfig,
    acts: Tensor,
    rec: Reconstruction,
    orig: OrigLogProbs | None,
    downstream_orig: dict[str, Tensor] | None,
    input_scale: Tensor | None = None,
) -> dict[str, Tensor]:
    """The active reconstruction terms of one reconstruction, unweighted. With input normalisation
    (``input_scale`` s) the MSE at the SAE is measured where the SAE works, on ``s * a``."""
    active = cfg.active()
    terms: dict[str, Tensor] = {}
    if "out_to_in" in active:
        if input_scale is None:
            terms["out_to_in"] = mse(rec.acts_hat, acts)
        else:
            terms["out_to_in"] = mse(rec.acts_hat * input_scale, acts * input_scale)
    if "logits_kl" in active:
        assert orig is not None and rec.logits is not None
        terms["logits_kl"] = kl_from_log_probs(orig, rec.logits).mean()
    if "in_to_orig" in active:
        assert downstream_orig is not None and rec.downstream
        terms["in_to_orig"] = downstream_mse(rec.downstream, downstream_orig)
    return terms


def total_loss(
    cfg: LossConfig,
    *,
    c_norm: Tensor | None,
    acts: Tensor,
    acts_hat: Tensor,
    orig: OrigLogProbs | None = None,
    logits_spliced: Tensor | None = None,
    downstream_orig: dict[str, Tensor] | None = None,
    downstream_spliced: dict[str, Tensor] | None = None,
    input_scale: Tensor | None = None,
    prefixes: Sequence[Reconstruction] = (),
    aux: Sequence[AuxTerm] = (),
) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of the configured terms, and each unweighted term (detached) for logging.

    ``c_norm`` is the mean over tokens of the SAE's sparsity penalty (``||c||_p`` for relu, L0 for
    jumprelu) as the SAE computed it (:attr:`e2e_sae.sae.SAEOutput.c_norm`, fused with its backward);
    the sparsity term is ``c_norm / d_in``. The topk family has none (``c_norm`` None).
    ``orig``: :func:`orig_log_probs` of the clean logits, needed by the KL term. ``prefixes``: the
    inner Matryoshka prefixes' reconstructions, each weighed by the same terms as the full one
    (logged summed as ``loss/<term>_prefixes``). ``aux``: the architecture's own terms (AuxK).
    """
    terms: dict[str, Tensor] = {}
    if c_norm is not None and cfg.sparsity is not None:
        terms["sparsity"] = c_norm / acts.shape[-1]
        loss = cfg.sparsity.coeff * terms["sparsity"]
    else:
        loss = acts.new_zeros(())
    active = cfg.active()
    full = Reconstruction(acts_hat, logits_spliced, downstream_spliced or {})
    terms.update(reconstruction_terms(cfg, acts, full, orig, downstream_orig, input_scale))
    weights: dict[str, Tensor | float] = dict(active)
    if cfg.balance_kl_to_mse:
        alpha = (terms["out_to_in"] / terms["logits_kl"].clamp_min(torch.finfo(torch.float32).tiny)).detach()
        weights["logits_kl"] = active["logits_kl"] * alpha
    for term, weight in weights.items():
        loss = loss + weight * terms[term]
    for rec in prefixes:
        for term, value in reconstruction_terms(cfg, acts, rec, orig, downstream_orig, input_scale).items():
            loss = loss + weights[term] * value
            key = f"{term}_prefixes"
            terms[key] = terms[key] + value if key in terms else value
    for extra in aux:
        terms[extra.name] = extra.value
        loss = loss + extra.coeff * extra.value
    if cfg.balance_kl_to_mse:
        terms["kl_balance_alpha"] = alpha
    return loss, {f"loss/{k}": v.detach() for k, v in terms.items()}
