"""The sparse autoencoder, with the reference library's parameter names and shapes.

    c     = ReLU(W_e a + b_e)                  # dictionary activations, [.., n_dict]
    a_hat = normalize(W_d, dim=0) c + b_d       # decoder columns used at unit norm

Other architectures (``sae.architecture``: TopK, BatchTopK, JumpReLU, Matryoshka; :mod:`e2e_sae.architectures`)
replace the ReLU by their activation on the same pre-activations (TopK's read ``a - b_d``) and add their
own loss terms; the decoder is the same. With ``sae.input_normalization`` the SAE sees ``s * a`` for one
constant ``s`` (estimated on its first batch, kept as the buffer ``input_scale``) and returns
``a_hat / s``, so the model around it is unchanged.

Parameters: ``encoder.0.weight [n_dict, d_in]``, ``encoder.0.bias [n_dict]``,
``decoder.weight [d_in, n_dict]``, ``decoder.bias [d_in]`` -- as in ApolloResearch/e2e_sae, so their
checkpoints load into this class (:func:`load_sae_state_dict`) and ours into theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from e2e_sae.architectures import Architecture, AuxTerm, make_architecture
from e2e_sae.architectures.relu import ReLU
from e2e_sae.architectures.spec import resolve_knobs
from e2e_sae.losses import check_kernel_supports
from e2e_sae.sae_kernels import SAEWithL1
from e2e_sae.sae_source import SAEFile, hook_to_module_key, read_sae_file

__all__ = ["SAE", "SAEFile", "build_sae", "hook_to_module_key", "load_sae", "read_sae_file", "sae_from_file"]

if TYPE_CHECKING:
    from e2e_sae.config import RunConfig


@dataclass
class SAEOutput:
    """What a training step needs from the SAE."""

    acts_hat: Tensor  # [..., d_in]
    c: Tensor  # dictionary activations [..., n_dict] (no gradient under the fused kernels)
    # mean over tokens of the sparsity penalty (relu: ||c||_p; jumprelu: L0) before its coefficient and
    # 1/d_in, differentiable; None for architectures without one (the topk family)
    c_norm: Tensor | None
    fired: Tensor  # [n_dict] float: tokens on which each element fired (c > 0) in this batch
    aux: list[AuxTerm] = field(default_factory=list)  # the architecture's extra loss terms (training)
    prefix_hats: list[Tensor] = field(default_factory=list)  # inner prefixes' reconstructions (Matryoshka)
    input_scale: Tensor | None = None  # s of sae.input_normalization (the SAE saw s * acts); None: none


class SAE(nn.Module):
    def __init__(
        self, d_in: int, n_dict_elements: int, arch: Architecture | None = None, input_normalization: str = "none"
    ):
        super().__init__()
        self.d_in = d_in
        self.n_dict_elements = n_dict_elements
        self.encoder = nn.Sequential(nn.Linear(d_in, n_dict_elements), nn.ReLU())
        self.decoder = nn.Linear(n_dict_elements, d_in)
        # Orthogonal decoder init (columns orthonormal when n_dict <= d_in, rows otherwise).
        with torch.no_grad():
            self.decoder.weight.copy_(nn.init.orthogonal_(torch.empty(n_dict_elements, d_in)).T)
        # relu has no parameters or buffers: its state dict stays the reference library's
        self.arch = arch if arch is not None else ReLU()
        self.input_normalization = input_normalization
        self.input_scale: Tensor | None
        self.register_buffer("input_scale", torch.zeros(()) if input_normalization != "none" else None)

    @property
    def is_plain_relu(self) -> bool:
        """The paper's SAE without input normalisation: the original code paths, bit for bit."""
        return self.arch.name == "relu" and self.input_scale is None

    @property
    def dict_elements(self) -> Tensor:
        """Decoder columns at unit norm: [d_in, n_dict]."""
        return F.normalize(self.decoder.weight, dim=0)

    def encode(self, acts: Tensor) -> Tensor:
        return self.encoder(acts)

    def decode(self, c: Tensor) -> Tensor:
        return F.linear(c, self.dict_elements, self.decoder.bias)

    def forward(self, acts: Tensor) -> tuple[Tensor, Tensor]:
        """acts [..., d_in] -> (a_hat [..., d_in], c [..., n_dict])."""
        if self.is_plain_relu:
            c = self.encode(acts)
            return self.decode(c), c
        out = self.forward_with_stats(acts)
        return out.acts_hat, out.c

    def forward_with_stats(self, acts: Tensor, p_norm: float = 1.0, kernel: str = "autograd") -> SAEOutput:
        """The forward pass plus the sparsity penalty and firing counts (relu: by one of the kernels of
        :mod:`e2e_sae.sae_kernels`; ``sparse`` / ``dense`` need ``p_norm == 1``). A training forward
        also updates the architecture's running state (thresholds, dead-latent counters)."""
        scale = self._input_scale(acts)
        x = acts if scale is None else acts * scale
        out = self._relu_forward(x, p_norm, kernel) if self.arch.name == "relu" else self._arch_forward(x)
        if scale is not None:
            out.acts_hat = out.acts_hat / scale
            out.prefix_hats = [h / scale for h in out.prefix_hats]
            out.input_scale = scale
        return out

    @torch.no_grad()
    def _input_scale(self, acts: Tensor) -> Tensor | None:
        """``s`` of the input normalisation, estimated on the first batch the SAE ever sees."""
        if self.input_scale is None:
            return None
        if bool(self.input_scale == 0):
            sq_norms = acts.detach().double().flatten(0, -2).pow(2).sum(-1)
            if self.input_normalization == "mean_norm":  # SAELens: mean ||s a|| = sqrt(d_in)
                scale = self.d_in**0.5 / sq_norms.sqrt().mean()
            else:  # mean ||s a||^2 = d_in: sqrt(d_in) x dictionary_learning's (mean ||s a||^2 = 1)
                scale = (self.d_in / sq_norms.mean()).sqrt()
            self.input_scale.copy_(scale)
        return self.input_scale

    def _arch_forward(self, x: Tensor) -> SAEOutput:
        """Encoder, the architecture's activation, decoder, and its loss terms (autograd)."""
        lead, flat = x.shape[:-1], x.reshape(-1, self.d_in)
        enc, b_dec, w_dec = cast(nn.Linear, self.encoder[0]), self.decoder.bias, self.dict_elements
        pre = F.linear(flat - b_dec if self.arch.subtracts_b_dec else flat, enc.weight, enc.bias)
        c = self.arch.activate(pre)
        x_hat = F.linear(c, w_dec, b_dec)
        aux, prefix_hats = [], []
        if self.training:
            aux = self.arch.aux_terms(flat, x_hat, pre, c, w_dec)
            prefix_hats = [F.linear(c[:, :m], w_dec[:, :m], b_dec).view(*lead, -1) for m in self.arch.prefix_sizes()]
        fired = (c.detach() > 0).sum(0).to(c.dtype)
        penalty = self.arch.penalty(pre, c)
        if self.training:
            self.arch.after_forward(pre.detach(), c.detach())
        return SAEOutput(x_hat.view(*lead, self.d_in), c.view(*lead, -1), penalty, fired, aux, prefix_hats)

    def _relu_forward(self, acts: Tensor, p_norm: float, kernel: str) -> SAEOutput:
        if kernel == "autograd":
            c = self.encode(acts)
            acts_hat = self.decode(c)
            c_norm = torch.linalg.vector_norm(c, ord=p_norm, dim=-1).mean()
            return SAEOutput(acts_hat, c, c_norm, c.detach().flatten(0, -2).sign().sum(0))
        check_kernel_supports(kernel, p_norm)
        flat = acts.reshape(-1, self.d_in)
        enc = self.encoder[0]
        acts_hat, c, l1, fired = SAEWithL1.apply(
            flat, enc.weight, enc.bias, self.dict_elements, self.decoder.bias, kernel == "sparse"
        )
        lead = acts.shape[:-1]
        return SAEOutput(acts_hat.view(*lead, self.d_in), c.view(*lead, -1), l1 / flat.shape[0], fired)


def build_sae(cfg: RunConfig, d_in: int, n_dict: int | None = None) -> SAE:
    """A fresh SAE of the run's architecture and input normalisation (``n_dict``: default from
    ``sae.dict_size_to_input_ratio``); it draws from the global RNG exactly as the relu SAE does."""
    n = round(cfg.sae.dict_size_to_input_ratio * d_in) if n_dict is None else n_dict
    sparsity = cfg.loss.sparsity
    arch = make_architecture(
        cfg.sae.architecture, cfg.sae.knobs(), n, cfg.p_norm, sparsity.target_l0 if sparsity is not None else None
    )
    return SAE(d_in, n, arch, cfg.sae.input_normalization or "none")


def load_sae_state_dict(path: str | Path, position: str | None = None) -> dict[str, Tensor]:
    """The SAE weights of :func:`read_sae_file`."""
    return read_sae_file(path, position).state


def load_sae(path: str | Path, position: str | None = None) -> SAE:
    """A relu SAE from a file (other architectures need their knobs: load them with their run config,
    :func:`e2e_sae.dictionary.load_trained_sae`)."""
    sae_file = read_sae_file(path, position)
    if sae_file.architecture != "relu" or sae_file.input_normalization != "none":
        raise ValueError(
            f"{path}: a {sae_file.architecture} SAE (input_normalization {sae_file.input_normalization}); "
            "load it with e2e_sae.dictionary.load_trained_sae"
        )
    n_dict, d_in = sae_file.state["encoder.0.weight"].shape
    sae = SAE(d_in, n_dict)
    sae.load_state_dict(sae_file.state)
    return sae


def sae_from_file(sae_file: SAEFile) -> SAE:
    """The SAE of a file that carries its whole definition (an imported SAELens SAE: architecture and
    knobs; the architecture's training-only knobs at their defaults)."""
    n_dict, d_in = sae_file.state["encoder.0.weight"].shape
    arch = make_architecture(sae_file.architecture, resolve_knobs(sae_file.architecture, sae_file.knobs), n_dict)
    sae = SAE(d_in, n_dict, arch, sae_file.input_normalization)
    sae.load_state_dict(sae_file.state)
    return sae
