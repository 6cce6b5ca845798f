"""Our architectures against SAELens 6 (PyPI ``sae-lens``) on the same weights and inputs: encode,
decode, every loss term and every gradient (JumpReLU's straight-through estimators included) agree to
1e-6. SAELens runs in its own venv (``E2E_SAE_SAELENS_DIR``, built by
``python -m e2e_sae.bench --setup-saelens DIR``; .ci/run builds it).

AuxK is compared at ``sae.auxk_form: saelens`` (the default), SAELens's form; the ``gao`` form
(dictionary_learning's) is tested on hand-computed values in tests/test_architectures.py.

Conventions bridged here, each a definition stated in docs/architectures.md: our reconstruction terms
are means over elements, SAELens's sums over d_in (so every SAELens term and gradient is ours times
d_in, with the same coefficients); both sides compute in float64, so 1e-6 tests the definitions, not
float32 rounding; our decoder is ``normalize(W_d, dim=0)``, so our decoder gradient
is SAELens's (at unit-norm W_dec) projected orthogonally to each column; our JumpReLU threshold is
``exp(log_threshold)`` (the paper's), so d/dlog_theta = theta * d/dtheta.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from e2e_sae.architectures import make_architecture
from e2e_sae.architectures.spec import resolve_knobs
from e2e_sae.bench.saelens import run_saelens
from e2e_sae.losses import CoeffLoss, LossConfig, Reconstruction, SparsityLoss, total_loss
from e2e_sae.sae import SAE

pytestmark = pytest.mark.skipif(
    not os.environ.get("E2E_SAE_SAELENS_DIR"),
    reason="set E2E_SAE_SAELENS_DIR to a dir prepared by python -m e2e_sae.bench --setup-saelens DIR",
)

D_IN, N_DICT, TOKENS, DEAD_AFTER = 16, 32, 24, 100
AUXK = {"aux_loss_coeff": 0.25, "auxk_form": "saelens", "dead_after_tokens": DEAD_AFTER}  # SAELens's AuxK
# case name -> (architecture, our knobs, loss.sparsity, SAELens config keyword arguments)
CASES: dict[str, tuple[str, dict, SparsityLoss | None, dict]] = {
    "relu": ("relu", {}, SparsityLoss(coeff=0.7), {"l1_coefficient": 0.7, "apply_b_dec_to_input": False}),
    "topk": (
        "topk",
        {"k": 5, **AUXK},
        None,
        {"k": 5, "aux_loss_coefficient": 0.25, "rescale_acts_by_decoder_norm": False},
    ),
    "batchtopk": (
        "batchtopk",
        {"k": 5, **AUXK, "topk_threshold_lr": 0.3},
        None,
        {"k": 5, "aux_loss_coefficient": 0.25, "rescale_acts_by_decoder_norm": False, "topk_threshold_lr": 0.3},
    ),
    "matryoshka_batchtopk": (
        "matryoshka_batchtopk",
        {"k": 5, **AUXK, "matryoshka_prefixes": [0.25, 0.5]},
        None,
        {"k": 5, "aux_loss_coefficient": 0.25, "rescale_acts_by_decoder_norm": False, "matryoshka_widths": [8, 16, 32]},
    ),
    "jumprelu": (
        "jumprelu",
        {"jumprelu_bandwidth": 0.4, "jumprelu_init_threshold": 0.3},
        SparsityLoss(coeff=0.6),
        {"jumprelu_bandwidth": 0.4, "l0_coefficient": 0.6, "apply_b_dec_to_input": False},
    ),
    "jumprelu_target_l0": (
        "jumprelu",
        {"jumprelu_bandwidth": 0.4, "jumprelu_init_threshold": 0.3},
        SparsityLoss(coeff=0.6, target_l0=6.0),
        {
            "jumprelu_bandwidth": 0.4,
            "l0_coefficient": 0.6,
            "apply_b_dec_to_input": False,
            "jumprelu_sparsity_loss_mode": "quadratic",
            "target_l0": 6.0,
        },
    ),
}


def our_sae(name: str) -> tuple[SAE, LossConfig, torch.Tensor, torch.Tensor]:
    """The SAE of a case with random weights (unit-norm decoder columns), its local loss, input and dead mask."""
    arch, knobs, sparsity, _ = CASES[name]
    g = torch.Generator().manual_seed(len(name))
    target_l0 = sparsity.target_l0 if sparsity is not None else None
    sae = SAE(D_IN, N_DICT, make_architecture(arch, resolve_knobs(arch, knobs), N_DICT, 1.0, target_l0))
    with torch.no_grad():
        sae.encoder[0].weight.copy_(0.3 * torch.randn(N_DICT, D_IN, generator=g))
        sae.encoder[0].bias.copy_(0.2 * torch.randn(N_DICT, generator=g))
        sae.decoder.weight.copy_(F.normalize(torch.randn(D_IN, N_DICT, generator=g), dim=0))
        sae.decoder.bias.copy_(0.1 * torch.randn(D_IN, generator=g))
        if arch == "jumprelu":  # thresholds spread so the kernel sees pre-activations on both sides
            sae.arch.log_threshold.copy_(torch.log(0.05 + 0.6 * torch.rand(N_DICT, generator=g)))
        if arch in ("batchtopk", "matryoshka_batchtopk"):
            sae.arch.threshold.fill_(0.2)
    dead = torch.rand(N_DICT, generator=g) < 0.5
    if hasattr(sae.arch, "tokens_since_fired"):
        sae.arch.tokens_since_fired.copy_(dead.long() * DEAD_AFTER)
    x = 1.5 * torch.randn(TOKENS, D_IN, generator=g)
    loss_cfg = LossConfig(sparsity=sparsity, out_to_in=CoeffLoss(coeff=1.0))
    return sae.double().train(), loss_cfg, x.double(), dead


def saelens_case(name: str, sae: SAE, x: torch.Tensor, dead: torch.Tensor) -> dict:
    arch, _, sparsity, cfg = CASES[name]
    params = {
        "W_enc": sae.encoder[0].weight.detach().t().clone(),
        "b_enc": sae.encoder[0].bias.detach().clone(),
        "W_dec": sae.decoder.weight.detach().t().clone(),
        "b_dec": sae.decoder.bias.detach().clone(),
    }
    if arch == "jumprelu":
        params["threshold"] = sae.arch.threshold.detach().clone()
    if arch in ("batchtopk", "matryoshka_batchtopk"):
        params["topk_threshold"] = sae.arch.threshold.detach().clone()
    coefficients = {"relu": {"l1": 0.7}, "jumprelu": {"l0": 0.6}}.get(arch, {})
    return {
        "architecture": arch,
        "cfg": {"d_in": D_IN, "d_sae": N_DICT, "dtype": "float64", **cfg},
        "params": params,
        "x": x,
        "dead": dead,
        "coefficients": coefficients,
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """Per case: (ours, SAELens's) activations, reconstruction, loss terms (in SAELens's units) and grads."""
    ours, cases = {}, []
    for name in CASES:
        sae, loss_cfg, x, dead = our_sae(name)
        cases.append(saelens_case(name, sae, x, dead))
        out = sae.forward_with_stats(x)
        loss, terms = total_loss(
            loss_cfg,
            c_norm=out.c_norm,
            acts=x,
            acts_hat=out.acts_hat,
            prefixes=[Reconstruction(h) for h in out.prefix_hats],
            aux=out.aux,
        )
        loss.backward()
        ours[name] = our_side(name, sae, out, loss, terms)
    theirs = run_saelens(Path(os.environ["E2E_SAE_SAELENS_DIR"]), cases, tmp_path_factory.mktemp("saelens"))
    return {name: (ours[name], their_side(name, t)) for name, t in zip(CASES, theirs, strict=True)}


def our_side(name: str, sae: SAE, out, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> dict:
    """Our results in SAELens's units and parameter layout (the module docstring's conventions)."""
    arch, knobs, sparsity, _ = CASES[name]
    w = sae.decoder.weight.detach()
    grads = {
        "W_enc": D_IN * sae.encoder[0].weight.grad.t(),
        "b_enc": D_IN * sae.encoder[0].bias.grad,
        "b_dec": D_IN * sae.decoder.bias.grad,
        "W_dec_projected": D_IN * sae.decoder.weight.grad,
    }
    losses = {"mse_loss": D_IN * terms["loss/out_to_in"]}
    if arch == "relu":
        losses["l1_loss"] = D_IN * sparsity.coeff * terms["loss/sparsity"]
    if arch == "jumprelu":
        losses["l0_loss"] = D_IN * sparsity.coeff * terms["loss/sparsity"]
        grads["threshold"] = D_IN * sae.arch.log_threshold.grad / sae.arch.threshold.detach()
    if "loss/auxk" in terms:
        losses["auxiliary_reconstruction_loss"] = D_IN * knobs["aux_loss_coeff"] * terms["loss/auxk"]
    if "loss/out_to_in_prefixes" in terms:
        losses["inner_mse_loss"] = D_IN * terms["loss/out_to_in_prefixes"]
    result = {"c": out.c.detach(), "acts_hat": out.acts_hat.detach(), "loss": D_IN * loss.detach()}
    result |= {"losses": losses, "grads": grads, "w": w}
    if arch in ("batchtopk", "matryoshka_batchtopk"):
        result["threshold"] = sae.arch.threshold.clone()
    return result


def their_side(name: str, t: dict) -> dict:
    losses = {k: v for k, v in t["losses"].items() if not k.startswith("inner_mse_loss_")}
    inner = [v for k, v in t["losses"].items() if k.startswith("inner_mse_loss_")]
    if inner:
        losses["inner_mse_loss"] = torch.stack(inner).sum()
    grads = {k: v for k, v in t["grads"].items() if k != "W_dec"}
    grads["W_dec"] = t["grads"]["W_dec"]
    result = {"c": t["feature_acts"], "acts_hat": t["sae_out"], "loss": t["loss"], "losses": losses, "grads": grads}
    if "topk_threshold" in t["buffers"]:
        result["threshold"] = t["buffers"]["topk_threshold"]
    return result


def close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(a.double(), b.double(), rtol=1e-6, atol=1e-6, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("name", list(CASES))
def test_encode_decode_and_loss_terms_equal_saelens(results, name):
    ours, theirs = results[name]
    close(ours["c"], theirs["c"], "dictionary activations")
    assert int((ours["c"] != 0).sum()) == int((theirs["c"] != 0).sum()) > 0
    close(ours["acts_hat"], theirs["acts_hat"], "reconstruction")
    assert set(ours["losses"]) == set(theirs["losses"]), (sorted(ours["losses"]), sorted(theirs["losses"]))
    for term in ours["losses"]:
        close(ours["losses"][term], theirs["losses"][term], term)
    close(ours["loss"], theirs["loss"], "total loss")
    if "threshold" in theirs:  # BatchTopK's threshold after one training batch
        close(ours["threshold"], theirs["threshold"], "topk_threshold")


@pytest.mark.parametrize("name", list(CASES))
def test_every_gradient_equals_saelens(results, name):
    ours, theirs = results[name]
    for param in ("W_enc", "b_enc", "b_dec", "threshold"):
        if param in theirs["grads"]:
            assert theirs["grads"][param].abs().max() > 0, param  # the comparison is not of zeros
            close(ours["grads"][param], theirs["grads"][param], f"grad {param}")
    assert ("threshold" in ours["grads"]) == ("threshold" in theirs["grads"])
    w, g = ours["w"], theirs["grads"]["W_dec"].t()  # [d_in, n_dict], SAELens's at unit-norm columns
    close(ours["grads"]["W_dec_projected"], g - w * (w * g).sum(0), "grad W_dec (projected)")
