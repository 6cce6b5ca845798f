"""The sparse autoencoder, with the reference library's parameter names and shapes.

    c     = ReLU(W_e a + b_e)                  # dictionary activations, [.., n_dict]
    a_hat = normalize(W_d, dim=0) c + b_d       # decoder columns used at unit norm

Parameters: ``encoder.0.weight [n_dict, d_in]``, ``encoder.0.bias [n_dict]``,
``decoder.weight [d_in, n_dict]``, ``decoder.bias [d_in]`` -- as in ApolloResearch/e2e_sae, so their
checkpoints load into this class (:func:`load_sae_state_dict`) and ours into theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from e2e_sae.losses import check_kernel_supports
from e2e_sae.sae_kernels import SAEWithL1


@dataclass
class SAEOutput:
    """What a training step needs from the SAE."""

    acts_hat: Tensor  # [..., d_in]
    c: Tensor  # dictionary activations [..., n_dict] (no gradient under the fused kernels)
    c_norm: Tensor  # mean over tokens of ||c||_p: the sparsity penalty before its 1/d_in (differentiable)
    fired: Tensor  # [n_dict] float: tokens on which each element fired (c > 0) in this batch


class SAE(nn.Module):
    def __init__(self, d_in: int, n_dict_elements: int):
        super().__init__()
        self.d_in = d_in
        self.n_dict_elements = n_dict_elements
        self.encoder = nn.Sequential(nn.Linear(d_in, n_dict_elements), nn.ReLU())
        self.decoder = nn.Linear(n_dict_elements, d_in)
        # Orthogonal decoder init (columns orthonormal when n_dict <= d_in, rows otherwise).
        with torch.no_grad():
            self.decoder.weight.copy_(nn.init.orthogonal_(torch.empty(n_dict_elements, d_in)).T)

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
        c = self.encode(acts)
        return self.decode(c), c

    def forward_with_stats(self, acts: Tensor, p_norm: float = 1.0, kernel: str = "autograd") -> SAEOutput:
        """The forward pass plus the sparsity norm and firing counts, by one of the kernels of
        :mod:`e2e_sae.sae_kernels` (``sparse`` / ``dense`` need ``p_norm == 1``)."""
        if kernel == "autograd":
            acts_hat, c = self(acts)
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


def hook_to_module_key(hook_name: str) -> str:
    """The reference library keys its SAEs by hook name with '.' replaced by '-'."""
    return hook_name.replace(".", "-")


@dataclass
class SAEFile:
    """An SAE's weights and the model weight processing it was trained under (None: not recorded)."""

    state: dict[str, Tensor]
    weight_processing: str | None


def read_sae_file(path: str | Path, position: str | None = None) -> SAEFile:
    """SAE weights from one of our checkpoints or a file saved by the authors' ``e2e_sae``.

    Accepts: a plain SAE state dict (processing unknown); our training checkpoint
    (``{"sae": state_dict, "config": ...}``: its ``model.weight_processing``, ``none`` for checkpoints
    written before the field existed, when HF models were never processed); or the reference's
    ``saes.state_dict()`` whose keys are ``blocks-6-hook_resid_pre.encoder.0.weight`` (pick the SAE
    by ``position``; a file with a single SAE needs none), trained on HookedTransformer-processed
    models (``hooked_transformer``).
    """
    blob = torch.load(path, map_location="cpu", weights_only=True)
    processing = None
    if isinstance(blob, dict) and isinstance(blob.get("sae"), dict):
        config = blob.get("config")
        if isinstance(config, dict):
            processing = (config.get("model") or {}).get("weight_processing") or "none"
        blob = blob["sae"]
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: not an SAE state dict")
    names = {"encoder.0.weight", "encoder.0.bias", "decoder.weight", "decoder.bias"}
    if names <= set(blob):
        return SAEFile({k: blob[k] for k in names}, processing)
    prefixes = sorted({k.rsplit(".", 2)[0] for k in blob if k.endswith(("encoder.0.weight",))})
    prefixes = [p.removesuffix(".encoder") for p in prefixes]
    if position is not None:
        wanted = hook_to_module_key(position)
        prefixes = [p for p in prefixes if p.split(".")[-1] == wanted]
    if len(prefixes) != 1:
        raise ValueError(
            f"{path}: cannot pick one SAE for position {position!r}; SAEs in the file: "
            f"{sorted({k.split('.')[0] for k in blob})}"
        )
    prefix = prefixes[0] + "."
    return SAEFile({k[len(prefix) :]: v for k, v in blob.items() if k.startswith(prefix)}, "hooked_transformer")


def load_sae_state_dict(path: str | Path, position: str | None = None) -> dict[str, Tensor]:
    """The SAE weights of :func:`read_sae_file`."""
    return read_sae_file(path, position).state


def load_sae(path: str | Path, position: str | None = None) -> SAE:
    state = load_sae_state_dict(path, position)
    n_dict, d_in = state["encoder.0.weight"].shape
    sae = SAE(d_in, n_dict)
    sae.load_state_dict(state)
    return sae
