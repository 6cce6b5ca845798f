"""Splicing: the fast path (start/stop at the SAE layer) equals the full spliced forward, and the
eval metrics equal a hand computation over plain model calls."""

import math

import torch
import torch.nn.functional as F
from conftest import TINY_MODEL

from e2e_sae.hooks import downstream_hooks
from e2e_sae.metrics import evaluate
from e2e_sae.native_lm import boot_native_lm
from e2e_sae.sae import SAE
from e2e_sae.spliced import SplicedModel


def _models(position="blocks.1.hook_resid_pre"):
    model = boot_native_lm(TINY_MODEL).requires_grad_(False)
    torch.manual_seed(0)
    sae = SAE(TINY_MODEL["d_model"], 32)
    down = downstream_hooks(position, TINY_MODEL["n_layers"])
    fast = SplicedModel(model, sae, position, down, start_at_sae_layer=True)
    full = SplicedModel(model, sae, position, down, start_at_sae_layer=False)
    return model, sae, fast, full


def test_start_at_layer_equals_full_spliced_forward():
    model, sae, fast, full = _models()
    tokens = torch.randint(0, TINY_MODEL["d_vocab"], (3, 16))
    assert fast.sae_layer == 1 and full.sae_layer is None
    c_fast, c_full = fast.clean_forward(tokens), full.clean_forward(tokens)
    torch.testing.assert_close(c_fast.acts, c_full.acts)
    s_fast, s_full = fast.spliced_forward(tokens, c_fast), full.spliced_forward(tokens, c_full)
    torch.testing.assert_close(s_fast.logits, s_full.logits, atol=1e-5, rtol=1e-5)
    assert list(s_fast.downstream) == ["blocks.2.hook_resid_pre"]
    torch.testing.assert_close(
        s_fast.downstream["blocks.2.hook_resid_pre"], s_full.downstream["blocks.2.hook_resid_pre"], atol=1e-5, rtol=1e-5
    )
    # the gradient reaches the SAE through the partial forward, and not the frozen model
    s_fast.logits.sum().backward()
    assert sae.encoder[0].weight.grad is not None and sae.encoder[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_local_pass_stops_at_the_sae_layer():
    model, sae, fast, _ = _models()
    tokens = torch.randint(0, TINY_MODEL["d_vocab"], (2, 16))
    local = fast.clean_forward(tokens, need_logits=False)
    assert local.logits is None
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == "blocks.1.hook_resid_pre")
    torch.testing.assert_close(local.acts, cache["blocks.1.hook_resid_pre"])


def test_eval_metrics_match_hand_computation():
    model, sae, fast, _ = _models()
    tokens = torch.randint(0, TINY_MODEL["d_vocab"], (4, 16))
    metrics = evaluate(fast, tokens, batch_size=3)  # batch size not dividing the set: token-weighted
    with torch.no_grad():
        logits = model(tokens)
        holder = {}

        def splice(act, hook):
            holder["a"] = act
            holder["a_hat"], holder["c"] = sae(act)
            return holder["a_hat"]

        spliced = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_pre", splice)])

    def ce(lg):
        return F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), tokens[:, 1:].reshape(-1)).item()

    assert math.isclose(metrics["ce_loss_original"], ce(logits), rel_tol=1e-5)
    assert math.isclose(metrics["ce_loss_increase"], ce(spliced) - ce(logits), rel_tol=1e-4, abs_tol=1e-6)
    assert math.isclose(metrics["l0"], (holder["c"] > 0).sum(-1).float().mean().item(), rel_tol=1e-6)
    a, a_hat = holder["a"], holder["a_hat"]
    ev = 1 - (a - a_hat).pow(2).sum() / (a - a.mean((0, 1))).pow(2).sum()
    assert math.isclose(metrics["explained_variance"], ev.item(), rel_tol=1e-4)
    assert metrics["eval_tokens"] == 64 and metrics["n_ctx"] == 16


def test_downstream_default_is_later_resid_pre_or_the_final_residual():
    assert downstream_hooks("blocks.0.hook_resid_pre", 3) == ["blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"]
    assert downstream_hooks("blocks.1.hook_resid_pre", 12)[-1] == "blocks.11.hook_resid_pre"
    assert downstream_hooks("blocks.2.hook_resid_pre", 3) == ["blocks.2.hook_resid_post"]


def test_last_layer_e2e_ds_splices_and_matches_full_forward():
    model, sae, fast, full = _models("blocks.2.hook_resid_pre")
    tokens = torch.randint(0, TINY_MODEL["d_vocab"], (2, 16))
    a = fast.spliced_forward(tokens, fast.clean_forward(tokens))
    b = full.spliced_forward(tokens, full.clean_forward(tokens))
    torch.testing.assert_close(
        a.downstream["blocks.2.hook_resid_post"], b.downstream["blocks.2.hook_resid_post"], atol=1e-5, rtol=1e-5
    )
