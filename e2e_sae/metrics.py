"""Evaluation metrics; their exact definitions are in docs/metrics.md.

All are computed on the fixed held-out eval tokens and accumulated token-weighted over batches, so
the result does not depend on the eval batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from e2e_sae.losses import kl_per_token
from e2e_sae.spliced import SplicedModel


def next_token_ce(logits: Tensor, tokens: Tensor) -> Tensor:
    """Sum of next-token cross-entropy over all predicted positions (``pos 0..n-2``)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="sum")


def l0_per_token(c: Tensor) -> Tensor:
    """Number of dictionary elements with ``c != 0`` for each token: ``[batch, pos]``."""
    return (c != 0).sum(-1)


class ActivationFrequency:
    """Counts, per dictionary element, the tokens on which it fired (c > 0) in the current window.

    A window closes after ``window_tokens`` training tokens; the alive count of the last closed
    window is the reported one (of the open window while none has closed yet, with its size).
    """

    def __init__(self, n_dict: int, window_tokens: int, device: torch.device | str = "cpu"):
        self.window_tokens = window_tokens
        self.counts = torch.zeros(n_dict, dtype=torch.long, device=device)
        self.tokens = 0
        self.last_alive: int | None = None
        self.last_window_tokens = 0

    def update(self, fired: Tensor, n_tokens: int) -> None:
        """Add one batch: ``fired [n_dict]``, the tokens of the batch on which each element fired
        (:attr:`e2e_sae.sae.SAEOutput.fired`), over ``n_tokens`` tokens."""
        self.counts += fired.long()
        self.tokens += n_tokens
        if self.tokens >= self.window_tokens:
            self.last_alive, self.last_window_tokens = int((self.counts > 0).sum()), self.tokens
            self.counts.zero_()
            self.tokens = 0

    def alive(self) -> tuple[int, int]:
        """(alive elements, tokens in the window they were counted over)."""
        if self.last_alive is not None:
            return self.last_alive, self.last_window_tokens
        return int((self.counts > 0).sum()), self.tokens

    def state_dict(self) -> dict:
        return {
            "counts": self.counts.cpu(),
            "tokens": self.tokens,
            "last_alive": -1 if self.last_alive is None else self.last_alive,
            "last_window_tokens": self.last_window_tokens,
        }

    def load_state_dict(self, state: dict) -> None:
        self.counts.copy_(state["counts"])
        self.tokens = int(state["tokens"])
        self.last_alive = None if int(state["last_alive"]) < 0 else int(state["last_alive"])
        self.last_window_tokens = int(state["last_window_tokens"])


@torch.no_grad()
def evaluate(
    spliced: SplicedModel, eval_tokens: Tensor, batch_size: int, act_freq: ActivationFrequency | None = None
) -> dict[str, float]:
    """CE of the original, spliced and zero-ablated model, KL, L0, MSE, both explained variances, top-1
    (definitions: docs/metrics.md).

    ``explained_variance`` pools over tokens: 1 - sum_t ||a_t - a_hat_t||^2 / sum_t ||a_t - mean(a)||^2.
    ``explained_variance_per_token_mean`` is the paper's: the per-token ratio
    1 - ||a_t - a_hat_t||^2 / ||a_t - mean(a)||^2, averaged over tokens. ``mean(a)`` is the mean
    activation vector of the whole eval set in both, so neither depends on the eval batch size; the
    per-token one needs it before any ratio, hence a second (SAE-input-only) pass over the eval set.
    """
    device = next(spliced.sae.parameters()).device
    sums = {k: 0.0 for k in ("ce_orig", "ce_spliced", "ce_zero", "kl", "l0", "sq_err", "top1")}
    n_tok = n_pred = 0
    a_sum = a_sq = None
    token_err: list[Tensor] = []
    for start in range(0, len(eval_tokens), batch_size):
        tokens = eval_tokens[start : start + batch_size].to(device)
        clean = spliced.clean_forward(tokens, need_logits=True)
        out = spliced.spliced_forward(tokens, clean, need_logits=True)
        zero_logits = spliced.replaced_logits(tokens, torch.zeros_like(clean.acts))
        a, a_hat = clean.acts.double(), out.acts_hat.double()
        clean_logits, spliced_logits = clean.needed_logits(), out.needed_logits()
        sums["ce_orig"] += next_token_ce(clean_logits, tokens).item()
        sums["ce_spliced"] += next_token_ce(spliced_logits, tokens).item()
        sums["ce_zero"] += next_token_ce(zero_logits, tokens).item()
        sums["kl"] += kl_per_token(clean_logits, spliced_logits).sum().item()
        sums["l0"] += l0_per_token(out.c).sum().item()
        if act_freq is not None:  # e2e_sae.evaluate counts alive elements over the eval tokens
            act_freq.update(out.fired, tokens.numel())
        err = (a - a_hat).pow(2).sum(-1).flatten()
        token_err.append(err.cpu())
        sums["sq_err"] += err.sum().item()
        sums["top1"] += (clean_logits.argmax(-1) == spliced_logits.argmax(-1)).sum().item()
        flat = a.flatten(0, 1)
        a_sum = flat.sum(0) if a_sum is None else a_sum + flat.sum(0)
        a_sq = flat.pow(2).sum(0) if a_sq is None else a_sq + flat.pow(2).sum(0)
        n_tok += tokens.numel()
        n_pred += tokens.shape[0] * (tokens.shape[1] - 1)
    if a_sum is None or a_sq is None:
        raise ValueError("evaluate needs at least one eval sample")
    d_in = a_sum.shape[0]
    total_var = (a_sq - a_sum.pow(2) / n_tok).sum().item()
    per_token_ev = _per_token_explained_variance(spliced, eval_tokens, batch_size, a_sum / n_tok, torch.cat(token_err))
    ce_orig, ce_spliced, ce_zero = (sums[k] / n_pred for k in ("ce_orig", "ce_spliced", "ce_zero"))
    return {
        "ce_loss_original": ce_orig,
        "ce_loss_spliced": ce_spliced,
        "ce_loss_increase": ce_spliced - ce_orig,
        "ce_loss_zero_ablated": ce_zero,
        "ce_loss_score": (ce_zero - ce_spliced) / (ce_zero - ce_orig) if ce_zero != ce_orig else float("nan"),
        "kl": sums["kl"] / n_tok,
        "l0": sums["l0"] / n_tok,
        "mse": sums["sq_err"] / (n_tok * d_in),
        "explained_variance": 1.0 - sums["sq_err"] / total_var if total_var > 0 else float("nan"),
        "explained_variance_per_token_mean": per_token_ev,
        "top1_agreement": sums["top1"] / n_tok,
        "eval_tokens": n_tok,
        "n_ctx": int(eval_tokens.shape[1]),
        **spliced.sae.arch.eval_info(),  # e.g. BatchTopK: threshold_inference, inference_threshold
    }


def _per_token_explained_variance(
    spliced: SplicedModel, eval_tokens: Tensor, batch_size: int, mean: Tensor, token_err: Tensor
) -> float:
    """Mean over tokens of 1 - ||a_t - a_hat_t||^2 / ||a_t - mean||^2 (``token_err``: the numerators,
    in eval order); the SAE input is recomputed with the fast clean pass (no logits)."""
    device = next(spliced.sae.parameters()).device
    ratios = []
    for start in range(0, len(eval_tokens), batch_size):
        tokens = eval_tokens[start : start + batch_size].to(device)
        a = spliced.clean_forward(tokens, need_logits=False).acts.double()
        ratios.append(((a - mean).pow(2).sum(-1).flatten()).cpu())
    var = torch.cat(ratios)
    return float((1.0 - token_err / var).mean())
