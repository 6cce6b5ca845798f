"""The hand-written SAE kernels compute what plain autograd computes: outputs, penalty, counts, grads."""

import pytest
import torch

from e2e_sae import sae_kernels
from e2e_sae.config import ConfigError, run_config_from_dict
from e2e_sae.sae import SAE
from e2e_sae.sae_kernels import resolve_kernel
from e2e_sae.train import train


def _step(sae: SAE, x: torch.Tensor, g: torch.Tensor, kernel: str):
    """One penalised step; returns the loss, the SAE's outputs and every gradient (params and x)."""
    sae.zero_grad()
    x = x.clone().requires_grad_(True)
    out = sae.forward_with_stats(x, 1.0, kernel)
    loss = (out.acts_hat * g).sum() + 0.7 * out.c_norm
    loss.backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    return loss.item(), out, {**grads, "x": x.grad.clone()}


# encoder bias shift -> batch density: 0 -> ~50% (dense path), -2.5 -> ~1% (sparse path), -50 -> none active
@pytest.mark.parametrize("bias", [0.0, -2.5, -50.0])
@pytest.mark.parametrize("kernel", ["dense", "sparse"])
def test_kernels_match_autograd(kernel, bias):
    torch.manual_seed(0)
    sae = SAE(16, 200)
    with torch.no_grad():
        sae.encoder[0].bias.fill_(bias)
    x, g = torch.randn(4, 32, 16), torch.randn(4, 32, 16)
    ref_loss, ref, ref_grads = _step(sae, x, g, "autograd")
    loss, out, grads = _step(sae, x, g, kernel)
    assert loss == pytest.approx(ref_loss, rel=1e-6, abs=1e-6)
    assert torch.equal(out.c, ref.c)
    assert torch.equal(out.fired, ref.fired)
    assert torch.allclose(out.acts_hat, ref.acts_hat, atol=1e-6)
    assert out.c_norm.item() == pytest.approx(ref.c_norm.item(), rel=1e-6, abs=1e-7)
    for name, ref_grad in ref_grads.items():
        assert torch.allclose(grads[name], ref_grad, rtol=1e-5, atol=1e-6), name


def test_sparse_kernel_switches_on_batch_density(monkeypatch):
    calls = []
    real = sae_kernels._to_csr
    monkeypatch.setattr(sae_kernels, "_to_csr", lambda c: calls.append(c.shape) or real(c))
    torch.manual_seed(0)
    sae, x = SAE(16, 200), torch.randn(2, 32, 16)
    sae.forward_with_stats(x, 1.0, "sparse")  # ~50% active at init: dense path
    assert calls == []
    with torch.no_grad():
        sae.encoder[0].bias.fill_(-2.5)  # ~1% active
    sae.forward_with_stats(x, 1.0, "sparse")
    assert calls == [(64, 200)]


def test_auto_kernel_choice():
    assert resolve_kernel("auto", "cpu", 1.0, compiled=False) == "sparse"
    assert resolve_kernel("auto", "cuda", 1.0, compiled=False) == "dense"
    assert resolve_kernel("auto", "cpu", 2.0, compiled=False) == "autograd"
    assert resolve_kernel("auto", "cpu", 1.0, compiled=True) == "autograd"
    assert resolve_kernel("dense", "cpu", 1.0, compiled=False) == "dense"


def test_kernel_config_errors_name_the_field(tiny_config):
    with pytest.raises(ConfigError, match=r"train\.compile: .*sae_kernel"):
        run_config_from_dict(tiny_config(**{"train.compile": True, "train.sae_kernel": "dense"}))
    with pytest.raises(ConfigError, match=r"train\.sae_kernel: 'sparse' implements the L1 penalty only"):
        run_config_from_dict(tiny_config(**{"train.sae_kernel": "sparse", "loss.sparsity.p_norm": 2.0}))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["local", "e2e"])
def test_sparse_training_matches_autograd_training(tiny_config, tmp_path, monkeypatch, mode):
    """Whole runs (eval, L0, alive counts) agree when every batch takes the sparse path."""
    monkeypatch.setattr(sae_kernels, "SPARSE_BELOW", 1.01)
    runs = {}
    for kernel in ("autograd", "sparse"):
        cfg = tiny_config(mode, output_dir=str(tmp_path / f"run_{mode}_{kernel}"), **{"train.sae_kernel": kernel})
        runs[kernel] = train(run_config_from_dict(cfg), progress=False)
    a, s = runs["autograd"], runs["sparse"]
    assert s["alive_dict_elements"] == a["alive_dict_elements"]
    assert s["l0"] == pytest.approx(a["l0"], rel=1e-3)
    assert s["ce_loss_increase"] == pytest.approx(a["ce_loss_increase"], rel=1e-3, abs=1e-5)
