"""The SAELens on-disk format (``cfg.json`` + ``sae_weights.safetensors``, as sae-lens 6 reads with
``SAE.load_from_disk``): our SAEs out to it, and SAELens SAEs in from it. docs/export.md states every
convention; in short:

Export (:func:`e2e_sae.export.to_saelens`). SAELens's inference SAEs compute ``c = act(W_enc^T (x - a b_dec) + b_enc)``,
``x_hat = W_dec^T c + b_dec`` (``a``: ``apply_b_dec_to_input``). Ours (docs/architectures.md) with input
scale ``s`` (1 without normalisation) and unit-norm decoder columns ``D = normalize(W_d, dim=0)`` is
``c = act(W_e (s x - a b_d) + b_e)``, ``x_hat = (D c + b_d) / s``. So, exactly and with the same ``c``:
``W_enc = s W_e^T``, ``b_enc = b_e``, ``W_dec = D^T / s``, ``b_dec = b_d / s``, ``normalize_activations:
none`` (SAELens's own ``fold_activation_norm_scaling_factor``; its ``expected_average_only_in`` is not
applied by ``load_from_disk``). Without normalisation the exported decoder rows are unit norm.
Architectures: relu -> ``standard``; topk -> ``topk`` (``rescale_acts_by_decoder_norm: false``);
jumprelu -> ``jumprelu`` with ``threshold = exp(log_threshold)``; batchtopk and matryoshka_batchtopk ->
``jumprelu`` with every threshold the learned inference threshold (their evaluation,
``ReLU(z) * (z > theta)``; SAELens saves its trained BatchTopK SAEs the same way).

Import (:func:`read_saelens_dir`). ``standard`` -> relu, ``topk`` -> topk, ``jumprelu`` -> jumprelu. Our
decoder is used at unit norm, so each latent's decoder norm ``n_i`` moves into the encoder (row and
bias times ``n_i``, JumpReLU's threshold times ``n_i``): the reconstruction is SAELens's, ``c`` is
SAELens's times ``n`` (SAELens's TopK with ``rescale_acts_by_decoder_norm`` already has it: the same
``c``). ``b_dec`` subtracted from the input or not is folded into ``b_enc``. Refused with one
line: another architecture, a per-token or unfolded input normalisation, hook_z reshaping or a head
index, a TopK SAE whose selection depends on unequal decoder norms, a partly processed model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from e2e_sae.architectures.spec import ARCHITECTURES

SAELENS_CFG_FILE = "cfg.json"
SAELENS_WEIGHTS_FILE = "sae_weights.safetensors"
# The sae-lens release whose format we write and test against (tests/test_saelens_format.py).
SAELENS_FORMAT_VERSION = "6.54.0"

# sae.architecture -> SAELens's inference architecture
TO_SAELENS = {
    "relu": "standard",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "batchtopk": "jumprelu",
    "matryoshka_batchtopk": "jumprelu",
}
FROM_SAELENS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}

# HookedTransformer.from_pretrained's processing flags (SAELens loads models with
# from_pretrained_no_processing(model_name, **model_from_pretrained_kwargs), every flag off by default).
PROCESSING_FLAGS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")


def model_from_pretrained_kwargs(weight_processing: str) -> dict[str, bool]:
    """What ``model.weight_processing`` means for SAELens's ``model_from_pretrained_kwargs``."""
    if weight_processing == "hooked_transformer":
        return dict.fromkeys(PROCESSING_FLAGS, True)
    return {}


def weight_processing_of(kwargs: dict[str, Any] | None, source: str) -> str:
    """The ``model.weight_processing`` that loads the model as SAELens's kwargs say; ValueError for a
    partly processed model (which neither of ours reproduces)."""
    kwargs = kwargs or {}
    flags = {f: bool(kwargs.get(f, False)) for f in PROCESSING_FLAGS}
    if kwargs.get("refactor_factored_attn_matrices"):
        flags["refactor_factored_attn_matrices"] = True
    if not any(flags.values()):
        return "none"
    if all(flags.get(f) for f in PROCESSING_FLAGS) and not flags.get("refactor_factored_attn_matrices"):
        return "hooked_transformer"
    raise ValueError(
        f"{source}: model_from_pretrained_kwargs {kwargs} processes the model's weights partly; this library loads "
        f"a model either with all of {', '.join(PROCESSING_FLAGS)} (model.weight_processing=hooked_transformer) or "
        "with none (model.weight_processing=none)"
    )


@dataclass
class ImportedSAE:
    """An SAELens SAE as our SAE state (:func:`read_saelens_dir`); :func:`e2e_sae.sae.read_sae_file`
    makes it an ``SAEFile``."""

    state: dict[str, Tensor]
    weight_processing: str
    architecture: str
    knobs: dict[str, Any]  # what defines the SAE besides its tensors (TopK's k)
    position: str | None  # the hook it reads (SAELens's hook_name)


@dataclass
class SAELensSAE:
    """One SAE in SAELens's format: ``cfg.json``'s mapping and the safetensors tensors."""

    cfg: dict[str, Any]
    weights: dict[str, Tensor]

    def write(self, out: Path) -> None:
        """Write ``out/cfg.json`` and ``out/sae_weights.safetensors`` (``out`` is created; the caller
        checked that it is new or empty)."""
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.weights.items()}, str(out / SAELENS_WEIGHTS_FILE))
        (out / SAELENS_CFG_FILE).write_text(json.dumps(self.cfg, indent=2) + "\n")


# ---- import ------------------------------------------------------------------------------------


def is_saelens_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / SAELENS_CFG_FILE).is_file() and (path / SAELENS_WEIGHTS_FILE).is_file()


def read_saelens_cfg(path: Path) -> dict[str, Any]:
    """``cfg.json`` with its metadata in one place: sae-lens 6 nests it under ``metadata``, older
    releases keep it at the top level (``hook_point`` for ``hook_name``)."""
    if not is_saelens_dir(path):
        raise ValueError(
            f"{path}: not an SAELens directory (it needs {SAELENS_CFG_FILE} and {SAELENS_WEIGHTS_FILE}); pass one "
            "written by SAE.save_model or python -m e2e_sae.export, or one of our checkpoints"
        )
    try:
        cfg = json.loads((path / SAELENS_CFG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path / SAELENS_CFG_FILE}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path / SAELENS_CFG_FILE}: not a JSON object")
    meta = cfg.get("metadata")
    merged = {**cfg, **(meta if isinstance(meta, dict) else {})}
    merged.setdefault("hook_name", cfg.get("hook_point"))
    if "architecture" not in merged:  # sae-lens < 6: standard, or topk by its activation function
        topk = cfg.get("activation_fn") == "topk" or cfg.get("activation_fn_str") == "topk"
        merged["architecture"] = "topk" if topk else "standard"
        if topk:
            merged["k"] = (cfg.get("activation_fn_kwargs") or {}).get("k")
    return merged


def check_saelens_cfg(cfg: dict[str, Any], source: str) -> str:
    """Our architecture for a SAELens config; ValueError (one line: what differs) for one we cannot
    reproduce exactly."""
    arch = cfg["architecture"]
    if arch not in FROM_SAELENS:
        raise ValueError(
            f"{source}: architecture {arch} has no counterpart here (this library trains {', '.join(ARCHITECTURES)}); "
            f"SAELens's {', '.join(FROM_SAELENS)} SAEs import"
        )
    act = cfg.get("activation_fn") or cfg.get("activation_fn_str") or "relu"
    if act not in ("relu", "topk"):
        raise ValueError(f"{source}: activation_fn {act}; only relu (and topk) activations import")
    norm = cfg.get("normalize_activations") or "none"
    if norm not in ("none", False):
        raise ValueError(
            f"{source}: normalize_activations {norm} is not folded into the weights (this library applies no "
            "per-token or unfolded normalisation to an imported SAE); fold it in SAELens first "
            "(sae.fold_activation_norm_scaling_factor(s); sae.save_model(dir))"
        )
    if (cfg.get("reshape_activations") or "none") != "none" or cfg.get("hook_head_index") is not None:
        raise ValueError(f"{source}: an SAE of one attention head or of hook_z reshaped; this library hooks whole d_in")
    if cfg.get("finetuning_scaling_factor"):
        raise ValueError(f"{source}: finetuning_scaling_factor is set; this library has no such scale")
    return FROM_SAELENS[arch]


def read_saelens_dir(path: str | Path, position: str | None = None) -> ImportedSAE:
    """An SAELens directory as our SAE state (module docstring); ``position``: the hook this run
    splices at (refused when the SAE was trained at another)."""
    path = Path(path)
    cfg = read_saelens_cfg(path)
    arch = check_saelens_cfg(cfg, str(path))
    hook = cfg.get("hook_name")
    if position is not None and hook is not None and hook != position:
        raise ValueError(
            f"{path}: the SAE reads {hook} but this run sets sae.position={position}; set sae.position={hook}"
        )
    processing = weight_processing_of(cfg.get("model_from_pretrained_kwargs"), str(path))
    weights = {k: v.double() for k, v in load_file(str(path / SAELENS_WEIGHTS_FILE)).items()}
    expected = {"W_enc", "b_enc", "W_dec", "b_dec"} | ({"threshold"} if arch == "jumprelu" else set())
    if set(weights) != expected:
        raise ValueError(
            f"{path / SAELENS_WEIGHTS_FILE}: tensors {sorted(weights)}; a SAELens {cfg['architecture']} SAE has "
            f"{sorted(expected)}"
        )
    state = saelens_to_state(weights, arch, bool(cfg.get("apply_b_dec_to_input", True)), cfg, str(path))
    knobs = {"k": int(cfg["k"])} if arch == "topk" else {}
    return ImportedSAE(state, processing, arch, knobs, hook)


def decoder_norms(w_dec: Tensor, arch: str, cfg: dict[str, Any], source: str) -> Tensor:
    """Per-latent decoder norms to fold into the encoder (1 for an all-zero row: it reconstructs nothing)."""
    norms = w_dec.norm(dim=-1)
    norms = torch.where(norms > 0, norms, torch.ones_like(norms))
    if arch == "topk" and not cfg.get("rescale_acts_by_decoder_norm", False):
        lo, hi = float(norms.min()), float(norms.max())
        if hi / lo - 1 > 1e-6:  # scaling pre-activations by unequal norms would change the TopK selection
            raise ValueError(
                f"{source}: topk with rescale_acts_by_decoder_norm false and decoder rows of norm {lo:.4g} to "
                f"{hi:.4g}; its selection depends on them and this library selects with unit-norm decoder columns"
            )
    return norms


def saelens_to_state(
    weights: dict[str, Tensor], arch: str, applies_b_dec: bool, cfg: dict[str, Any], source: str
) -> dict[str, Tensor]:
    """SAELens tensors (float64) -> our state dict (module docstring's import)."""
    w_enc, b_enc, w_dec, b_dec = weights["W_enc"], weights["b_enc"], weights["W_dec"], weights["b_dec"]
    d_in, d_sae = w_enc.shape
    if b_enc.shape != (d_sae,) or w_dec.shape != (d_sae, d_in) or b_dec.shape != (d_in,):
        raise ValueError(f"{source}: W_enc {tuple(w_enc.shape)} does not fit W_dec, b_enc or b_dec")
    norms = decoder_norms(w_dec, arch, cfg, source)
    ours_subtracts = arch == "topk"
    # their pre-activation W_enc^T (x - a b_dec) + b_enc, in our encoder's form
    bias = b_enc + (float(ours_subtracts) - float(applies_b_dec)) * (b_dec @ w_enc)
    state = {
        "encoder.0.weight": norms[:, None] * w_enc.t(),
        "encoder.0.bias": norms * bias,
        "decoder.weight": (w_dec / norms[:, None]).t().contiguous(),
        "decoder.bias": b_dec,
    }
    if arch == "jumprelu":
        # theta <= 0 fires on every positive pre-activation, as SAELens's ReLU-then-threshold does;
        # we store log theta, so it becomes the smallest positive float
        theta = (norms * weights["threshold"]).clamp(min=torch.finfo(torch.float32).tiny)
        state["arch.log_threshold"] = theta.log()
    if arch == "topk":
        state["arch.tokens_since_fired"] = torch.zeros(d_sae, dtype=torch.long)  # no latent known dead yet
    return state
