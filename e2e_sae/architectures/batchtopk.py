"""BatchTopK SAE (Bussmann, Leask and Nanda 2024).

Training: ``c = BatchTopK_k(ReLU(W_e (x - b_d) + b_e))`` keeps the ``k * n_tokens`` largest
activations of the whole batch (``[tokens, n_dict]`` flattened), so L0 is k on average over the batch
and varies per token. Each training batch moves a single threshold toward the smallest activation it
kept: ``theta <- (1 - lr) theta + lr * min(c[c > 0])`` (``sae.topk_threshold_lr``; SAELens's
estimate of the authors' "average minimum positive activation", starting from 0). Evaluation uses
that threshold instead of the batch selection, as the authors define inference:
``c = ReLU(pre) * (pre > theta)``, so a token's L0 no longer depends on its batch; the eval metrics
record ``threshold_inference`` and the threshold. AuxK as for TopK (:mod:`.topk`), ``sae.auxk_form``
included; a latent fires when the batch selection kept it (``c > 0``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from e2e_sae.architectures.topk import DeadLatents


def batchtopk_activations(pre: Tensor, k: int) -> Tensor:
    """The ``k * tokens`` largest of ``ReLU(pre) [tokens, n_dict]`` over the whole batch."""
    acts = pre.relu()
    flat = acts.flatten()
    top = flat.topk(int(k * pre.shape[0]), sorted=False)
    return torch.zeros_like(flat).scatter(-1, top.indices, top.values).view_as(acts)


class BatchTopK(DeadLatents):
    name = "batchtopk"
    threshold: Tensor  # scalar float64 (a buffer)
    subtracts_b_dec = True

    def __init__(
        self,
        n_dict: int,
        k: int,
        aux_coeff: float,
        dead_after_tokens: int,
        threshold_lr: float,
        auxk_form: str = "saelens",
    ):
        super().__init__(n_dict, aux_coeff, dead_after_tokens, auxk_form)
        self.k = k
        self.threshold_lr = threshold_lr
        # double, as SAELens keeps it: an EMA of small steps loses them in fp32
        self.register_buffer("threshold", torch.zeros((), dtype=torch.float64))

    def activate(self, pre: Tensor) -> Tensor:
        if self.training:
            return batchtopk_activations(pre, self.k)
        return pre.relu() * (pre > self.threshold.to(pre.dtype))

    @torch.no_grad()
    def after_forward(self, pre: Tensor, c: Tensor) -> None:
        super().after_forward(pre, c)
        positive = c[c > 0]
        if positive.numel():
            lr = self.threshold_lr
            self.threshold.copy_((1 - lr) * self.threshold + lr * positive.min().double())

    def eval_info(self) -> dict[str, float | bool]:
        return {"threshold_inference": True, "inference_threshold": float(self.threshold)}
