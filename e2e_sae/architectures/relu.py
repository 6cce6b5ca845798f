"""ReLU SAE (Braun et al. 2024; the reference library): ``c = ReLU(W_e x + b_e)``, sparsity penalty
``||c||_p`` (p = ``loss.sparsity.p_norm``), no auxiliary loss. The SAE runs this architecture by its
original code path (the fused kernels of :mod:`e2e_sae.sae_kernels` included), so today's runs are
unchanged bit for bit; this module states the definition for the other paths."""

from __future__ import annotations

import torch
from torch import Tensor

from e2e_sae.architectures.base import Architecture


class ReLU(Architecture):
    name = "relu"

    def __init__(self, p_norm: float = 1.0):
        super().__init__()
        self.p_norm = p_norm

    def activate(self, pre: Tensor) -> Tensor:
        return pre.relu()

    def penalty(self, pre: Tensor, c: Tensor) -> Tensor:
        return torch.linalg.vector_norm(c, ord=self.p_norm, dim=-1).mean()
