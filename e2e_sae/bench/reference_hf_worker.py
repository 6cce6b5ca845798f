"""The reference side of the HF-model equality tests: runs in the reference venv only
(``DIR/venv/bin/python -P -s reference_hf_worker.py SPEC.json OUT.pt``; never imported by this project, whose
``e2e_sae`` is not the authors' package).

Loads a GPT-2-architecture HF model directory the way TransformerLens 3's
``HookedTransformer.from_pretrained`` does -- TL3's own GPT-2 weight conversion, then
``load_and_process_state_dict`` with its defaults (fold LayerNorm, centre writing weights, centre
the unembedding, fold value biases) -- and reports, for the spec's tokens: ``hook_resid_pre`` of
every layer, the log-probs, and the authors' own metrics (``calc_output_metrics``,
``calc_sparsity_metrics``, the ``logits_kl`` loss) for the spec's SAE spliced by their
``SAETransformer``, all tokens in one batch (their metrics are batch means).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
from transformers import GPT2LMHeadModel

from e2e_sae.losses import LogitsKLLoss
from e2e_sae.metrics import calc_output_metrics, calc_sparsity_metrics
from e2e_sae.models.sparsifiers import SAE
from e2e_sae.models.transformers import SAETransformer


def hooked_gpt2(model_dir: str) -> HookedTransformer:
    """A GPT-2-architecture HF checkpoint as HookedTransformer.from_pretrained processes it by default."""
    hf = GPT2LMHeadModel.from_pretrained(model_dir).float()
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
        normalization_type="LN",
        eps=c.layer_norm_epsilon,
        original_architecture="GPT2LMHeadModel",
    )
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(convert_gpt2_weights(hf, cfg))
    model.eval()
    return model


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    blob = torch.load(spec["inputs"], map_location="cpu", weights_only=True)
    tokens, position = blob["tokens"], spec["position"]
    model = hooked_gpt2(spec["model_dir"])
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    resid_pre = [cache[f"blocks.{i}.hook_resid_pre"] for i in range(model.cfg.n_layers)]
    n_dict, d_in = blob["sae"]["encoder.0.weight"].shape
    sae_model = SAETransformer(model, [position], n_dict / d_in)
    key = position.replace(".", "-")
    if sae_model.saes[key].n_dict_components != n_dict:
        sae_model.saes[key] = SAE(d_in, n_dict)
    sae_model.saes[key].load_state_dict(blob["sae"])
    with torch.no_grad():
        orig_logits, _ = sae_model.forward_raw(tokens, run_entire_model=True, final_layer=None)
        new_logits, new_acts = sae_model.forward(tokens, sae_positions=[position])
    out = calc_output_metrics(tokens, orig_logits, new_logits, train=False)
    sparsity = calc_sparsity_metrics(new_acts, train=False)
    metrics = {
        "ce_loss_original": out["performance/eval/orig_model_ce_loss"],
        "ce_loss_spliced": out["performance/eval/sae_model_ce_loss"],
        "ce_loss_increase": -out["performance/eval/difference_ce_loss"],  # theirs is orig - sae
        "l0": sparsity[f"sparsity/eval/L_0/{position}"],
        "kl": LogitsKLLoss(coeff=1.0).calc_loss(new_logits, orig_logits).item(),
    }
    torch.save({"resid_pre": resid_pre, "log_probs": logits.log_softmax(-1), "metrics": metrics}, out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
