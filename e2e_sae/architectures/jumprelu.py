"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead").

    c = z * H(z - theta),   z = W_e x + b_e,   theta = exp(log_theta) > 0 per latent (learned)

The step H has no useful gradient, so both H in the activation and H in the L0 penalty get the
paper's straight-through pseudo-derivatives with a rectangle kernel ``K(u) = 1[|u| < 1/2]`` of width
``sae.jumprelu_bandwidth`` (epsilon):

    d JumpReLU / d theta = -(theta / eps) K((z - theta) / eps)       d JumpReLU / d z = H(z - theta)
    d H(z - theta) / d theta = -(1 / eps) K((z - theta) / eps)       (none to z)

Sparsity penalty per token (weighted by ``loss.sparsity.coeff / d_in``): ``L0 = sum_i H(z_i - theta_i)``
(the paper's), or with ``loss.sparsity.target_l0 = T`` the quadratic ``2/T (L0 - T)^2`` around a
target (Gemma Scope 2; SAELens's ``quadratic`` mode). The threshold is stored as its log, as in the
paper (SAELens 6 stores theta itself and clamps it at 0; docs/architectures.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from e2e_sae.architectures.base import Architecture


def rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFn(torch.autograd.Function):
    """``z * H(z - theta)`` with the paper's pseudo-derivative to theta (docstring above)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        g_theta = -(theta / eps) * rectangle((z - theta) / eps) * grad
        return (z > theta).to(grad.dtype) * grad, g_theta.sum(0), None


class StepFn(torch.autograd.Function):
    """``H(z - theta)`` with the paper's pseudo-derivative to theta, none to z."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        return None, (-(1.0 / eps) * rectangle((z - theta) / eps) * grad).sum(0), None


def jumprelu_penalty(z: Tensor, theta: Tensor, bandwidth: float, target_l0: float | None) -> Tensor:
    """Mean over tokens of the L0 penalty (``target_l0``: the quadratic one); differentiable in theta."""
    l0 = StepFn.apply(z, theta, bandwidth).sum(-1)
    if target_l0 is not None:
        l0 = 2.0 / target_l0 * (l0 - target_l0).pow(2)
    return l0.mean()


class JumpReLU(Architecture):
    name = "jumprelu"

    def __init__(self, n_dict: int, bandwidth: float, init_threshold: float, target_l0: float | None):
        super().__init__()
        self.bandwidth = bandwidth
        self.target_l0 = target_l0
        self.log_threshold = nn.Parameter(torch.full((n_dict,), math.log(init_threshold)))

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def activate(self, pre: Tensor) -> Tensor:
        return JumpReLUFn.apply(pre, self.threshold, self.bandwidth)

    def penalty(self, pre: Tensor, c: Tensor) -> Tensor:
        return jumprelu_penalty(pre, self.threshold, self.bandwidth, self.target_l0)
