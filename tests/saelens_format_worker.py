"""Runs in the sae-lens venv (tests/test_saelens_format.py), never imported by this package.

``python saelens_format_worker.py SPEC.pt OUT.pt``. SPEC is a dict with

- ``load``: a list of ``{"dir", "x"}``: ``SAE.load_from_disk(dir, dtype="float64")``, then its
  ``encode(x)`` and ``decode`` of that, and the loaded class and config;
- ``save``: a list of ``{"dir", "architecture", "cfg", "params", "x"}``: SAELens's inference SAE of that
  architecture (``batchtopk``: its training SAE, saved by ``save_inference_model`` as SAELens saves a
  trained one) with these parameters, saved to ``dir``; its encode and decode of ``x``;
- ``model`` (optional): a list of ``{"path", "tokens", "hooks", "kwargs"}``: the model as SAELens's
  ``load_model`` loads it, TransformerLens 3's ``HookedTransformer.from_pretrained_no_processing(path,
  **model_from_pretrained_kwargs)`` (taken step by step, see :func:`model_case`); the hooks'
  activations on ``tokens`` and the log-probs.

OUT holds ``load``, ``save`` (lists of outputs) and ``model``.
"""

from __future__ import annotations

import sys

import torch
from sae_lens import (
    SAE,
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)
from sae_lens.saes.sae import SAEMetadata

CLASSES = {
    "standard": (StandardSAE, StandardSAEConfig),
    "topk": (TopKSAE, TopKSAEConfig),
    "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig),
    "batchtopk": (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig),
}


def load_case(case: dict) -> dict:
    sae = SAE.load_from_disk(case["dir"], dtype="float64")
    with torch.no_grad():
        c = sae.encode(case["x"])
        return {
            "class": type(sae).__name__,
            "cfg": sae.cfg.to_dict(),
            "c": c,
            "x_hat": sae.decode(c),
            "forward": sae(case["x"]),
        }


def save_case(case: dict) -> dict:
    sae_cls, cfg_cls = CLASSES[case["architecture"]]
    cfg = dict(case["cfg"])
    cfg["metadata"] = SAEMetadata(**cfg.get("metadata", {}))
    sae = sae_cls(cfg_cls(**cfg))
    with torch.no_grad():
        for name, value in case["params"].items():
            getattr(sae, name).copy_(value)
    if case["architecture"] == "batchtopk":
        sae.save_inference_model(case["dir"])
        sae = SAE.load_from_disk(case["dir"], dtype="float64")  # SAELens's own JumpReLU form of it
    else:
        sae.save_model(case["dir"])
    with torch.no_grad():
        c = sae.encode(case["x"])
        return {"class": type(sae).__name__, "c": c, "x_hat": sae.decode(c)}


def model_case(spec: dict) -> dict:
    """``HookedTransformer.from_pretrained_no_processing(path, **model_from_pretrained_kwargs)``, its
    steps taken here: TL3 refuses a local path by name (``get_official_model_name``: "not found. Valid
    official model names"), needs the hub for a named model's config (``gpt2`` + ``hf_model=``), and its
    local-config conversion reads ``GPT2Config.n_ctx``, which transformers 5 no longer has. So the config
    is built from the HF one as that conversion would, the weights converted by TL3's own GPT-2
    converter (what ``get_pretrained_state_dict`` calls) and processed by ``load_and_process_state_dict``
    with from_pretrained_no_processing's flags (all off) overridden by the kwargs."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    from transformers import GPT2LMHeadModel

    flags = {
        "fold_ln": False,
        "center_writing_weights": False,
        "center_unembed": False,
        "fold_value_biases": False,
        "refactor_factored_attn_matrices": False,
        **spec["kwargs"],
    }
    hf = GPT2LMHeadModel.from_pretrained(spec["path"]).float()
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer,
        d_model=c.n_embd,
        d_head=c.n_embd // c.n_head,
        n_heads=c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd,
        d_vocab=c.vocab_size,
        n_ctx=c.n_positions,
        act_fn=c.activation_function,
        normalization_type="LNPre" if flags["fold_ln"] else "LN",
        eps=c.layer_norm_epsilon,
        original_architecture="GPT2LMHeadModel",
    )
    model = HookedTransformer(cfg, move_to_device=False)
    model.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), **flags)
    model.eval()
    with torch.no_grad():
        logits, cache = model.run_with_cache(spec["tokens"], names_filter=lambda n: n in spec["hooks"])
    return {"hooks": {h: cache[h] for h in spec["hooks"]}, "log_probs": logits.log_softmax(-1)}


def main(spec_path: str, out_path: str) -> None:
    spec = torch.load(spec_path, weights_only=True)
    out = {
        "load": [load_case(c) for c in spec.get("load", [])],
        "save": [save_case(c) for c in spec.get("save", [])],
        "model": [model_case(m) for m in spec.get("model", [])],
    }
    torch.save(out, out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
