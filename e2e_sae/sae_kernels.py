"""Hand-written forward and backward of the SAE with its L1 penalty: the training step's hot path.

Why: with the L1 penalty (p = 1) and ``c = ReLU(pre) >= 0``, ``d||c||_1 / dc = 1`` wherever c is
active, so the penalty's gradient folds into the decoder's input gradient as a scalar and the ReLU
mask applies once (``threshold_backward``); plain autograd instead materialises ``sign(c)``, a
product and a sum of ``[tokens, n_dict]`` tensors. More importantly, once training has made c sparse
(the point of the method: L0 of tens out of thousands), four of the SAE's five matmuls only need the
active entries. The ``sparse`` path stores c as CSR and runs the decoder forward, its weight gradient,
the masked decoder input gradient (a sampled matmul) and the encoder weight gradient on the nonzeros;
only the encoder forward stays dense. It switches per batch: an estimate of the density from every
16th token's activations picks the sparse path below :data:`SPARSE_BELOW`, else the fused dense one.

Kernels (``train.sae_kernel``): ``dense`` (fused, dense), ``sparse`` (sparse when the batch is
sparse, else fused dense), ``autograd`` (plain PyTorch; what ``train.compile`` compiles), ``auto``
(``sparse`` on CPU, ``dense`` on CUDA, where the sparse path has not been measured; ``autograd``
when p != 1 or ``train.compile``). All compute the same function to float tolerance (tested against
autograd). Timings: docs/performance.md.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from e2e_sae.losses import FUSED_KERNEL_P_NORM

# torch warns once per process that CSR support is "beta"; the ops used here are tested against autograd.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)

# Batch density (active fraction of c) below which the sparse path is used. Measured on CPU (1 thread,
# n_dict 7680, d_in 128, 1024 tokens; docs/performance.md, "SAE kernels"): per training step, sparse
# 202 vs fused dense 243 ms at 3.3% density (L0 254), 172 vs 242 ms at 1.7% (L0 129). Building the CSR
# scans all of c and the sparse matmuls lose their edge as density grows, so the switch sits below
# the densities where the sparse path was not measured to win.
SPARSE_BELOW = 0.05


def resolve_kernel(requested: str, device_type: str, p_norm: float, compiled: bool) -> str:
    """The kernel a run uses: ``sparse``, ``dense`` or ``autograd`` (see the module docstring)."""
    if requested != "auto":
        return requested
    if p_norm != FUSED_KERNEL_P_NORM or compiled:
        return "autograd"
    return "sparse" if device_type == "cpu" else "dense"


def _to_csr(c: Tensor) -> Tensor:
    """CSR of a 2-D tensor from one scan (faster than ``to_sparse_csr`` on CPU, which also sorts)."""
    n_rows, n_cols = c.shape
    flat = c.view(-1).nonzero().squeeze(1)
    rows, cols = flat.div(n_cols, rounding_mode="floor"), flat.remainder(n_cols)
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=c.device)
    crow[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)
    return torch.sparse_csr_tensor(crow, cols, c.view(-1)[flat], (n_rows, n_cols), check_invariants=False)


def estimated_density(c: Tensor) -> float:
    """Active fraction of ``c [tokens, n_dict]`` from every 16th token (one small reduction)."""
    sample = c[::16]
    return sample.count_nonzero().item() / sample.numel()


class SAEWithL1(torch.autograd.Function):
    """``(x, W_e, b_e, W_d_unit, b_d) -> (x_hat, c, sum(c), fired)`` for 2-D ``x [tokens, d_in]``.

    ``sum(c)`` is the L1 norm summed over tokens (``c >= 0``); ``fired [n_dict]`` counts the tokens
    on which each element is active (float, exact below 2^24 tokens). ``c`` and ``fired`` carry no
    gradient: the penalty's gradient flows through ``sum(c)``.
    """

    @staticmethod
    def forward(ctx, x, w_enc, b_enc, w_dec, b_dec, allow_sparse: bool):
        c = torch.addmm(b_enc, x, w_enc.t()).relu_()
        sparse = allow_sparse and estimated_density(c) < SPARSE_BELOW
        if sparse:
            c_csr = _to_csr(c)
            x_hat = torch.addmm(b_dec, c_csr, w_dec.t())
            l1 = c_csr.values().sum()
            fired = torch.bincount(c_csr.col_indices(), minlength=c.shape[1]).to(c.dtype)
            ctx.save_for_backward(x, w_enc, w_dec, c_csr)
        else:
            x_hat = torch.addmm(b_dec, c, w_dec.t())
            l1 = c.sum()
            fired = c.sign().sum(0)
            ctx.save_for_backward(x, w_enc, w_dec, c)
        ctx.sparse = sparse
        ctx.mark_non_differentiable(c, fired)
        return x_hat, c, l1, fired

    @staticmethod
    def backward(ctx, g_x_hat, _g_c, g_l1, _g_fired):
        x, w_enc, w_dec, c = ctx.saved_tensors
        g_x_hat = g_x_hat.contiguous()
        if ctx.sparse:
            # d loss / d pre on the active entries only: (g_x_hat @ W_d)[active] + g_l1.
            g_pre = torch.sparse.sampled_addmm(c, g_x_hat, w_dec, beta=0.0)
            g_pre.values().add_(g_l1)
            g_w_dec = torch.sparse.mm(c.t(), g_x_hat).t()
            g_w_enc = torch.sparse.mm(g_pre.t(), x)
            g_b_enc = torch.bincount(g_pre.col_indices(), weights=g_pre.values(), minlength=w_enc.shape[0])
            g_b_enc = g_b_enc.to(x.dtype)
            g_x = torch.sparse.mm(g_pre, w_enc) if ctx.needs_input_grad[0] else None
        else:
            g_pre = torch.ops.aten.threshold_backward(torch.addmm(g_l1, g_x_hat, w_dec), c, 0)
            g_w_dec = g_x_hat.t() @ c
            g_w_enc = g_pre.t() @ x
            g_b_enc = g_pre.sum(0)
            g_x = g_pre @ w_enc if ctx.needs_input_grad[0] else None
        return g_x, g_w_enc, g_b_enc, g_w_dec, g_x_hat.sum(0), None
