"""Each loss and metric against a hand computation."""

import math

import torch
import torch.nn.functional as F

from e2e_sae.config import LossConfig
from e2e_sae.losses import downstream_mse, logits_kl, mse, total_loss
from e2e_sae.metrics import ActivationFrequency, kl_per_token, l0_per_token, next_token_ce
from e2e_sae.sae import SAE


def test_sparsity_term_is_mean_token_lp_norm_over_d_in():
    sae = SAE(d_in=4, n_dict_elements=3)
    with torch.no_grad():  # c = ReLU(first three coordinates of the input)
        sae.encoder[0].weight.copy_(torch.eye(3, 4))
        sae.encoder[0].bias.zero_()
    acts = torch.tensor([[[3.0, 4.0, -1.0, 0.0], [1.0, 0.0, -2.0, 0.0]]])  # c: L1 norms 7 and 1, L2 norms 5 and 1
    for p_norm, expected in ((1.0, (7 + 1) / 2 / 4), (2.0, (5 + 1) / 2 / 4)):
        out = sae.forward_with_stats(acts, p_norm)
        cfg = LossConfig(sparsity={"coeff": 1.0, "p_norm": p_norm}, out_to_in={"coeff": 1.0})
        _, terms = total_loss(cfg, c_norm=out.c_norm, acts=acts, acts_hat=out.acts_hat)
        assert math.isclose(terms["loss/sparsity"].item(), expected, rel_tol=1e-6)


def test_mse_and_downstream_mse():
    a, b = torch.zeros(1, 2, 2), torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])
    assert math.isclose(mse(b, a).item(), (1 + 1 + 4 + 0) / 4)
    orig = {"h1": a, "h2": a}
    spliced = {"h1": b, "h2": a}
    assert math.isclose(downstream_mse(spliced, orig).item(), (1.5 + 0.0) / 2)


def test_kl_direction_is_orig_to_spliced():
    p_logits = torch.log(torch.tensor([[[0.9, 0.1]]]))
    q_logits = torch.log(torch.tensor([[[0.5, 0.5]]]))
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)  # KL(p || q)
    reverse = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert math.isclose(logits_kl(p_logits, q_logits).item(), expected, rel_tol=1e-5)
    assert math.isclose(kl_per_token(p_logits, q_logits).item(), expected, rel_tol=1e-5)
    assert not math.isclose(expected, reverse, rel_tol=1e-2)


def test_total_loss_weights_the_mode_terms():
    cfg = LossConfig(sparsity={"coeff": 2.0}, out_to_in={"coeff": 3.0})
    c = torch.tensor([[[1.0, 1.0]]])
    a, a_hat = torch.zeros(1, 1, 2), torch.ones(1, 1, 2)
    c_norm = torch.linalg.vector_norm(c, ord=1, dim=-1).mean()
    loss, terms = total_loss(cfg, c_norm=c_norm, acts=a, acts_hat=a_hat)
    assert math.isclose(loss.item(), 2.0 * (2 / 2) + 3.0 * 1.0)
    assert set(terms) == {"loss/sparsity", "loss/out_to_in"}


def test_next_token_ce_uses_all_predicted_positions():
    logits = torch.randn(2, 4, 7)
    tokens = torch.randint(0, 7, (2, 4))
    manual = sum(-F.log_softmax(logits[b, t], -1)[tokens[b, t + 1]].item() for b in range(2) for t in range(3))
    assert math.isclose(next_token_ce(logits, tokens).item(), manual, rel_tol=1e-5)


def test_l0_counts_nonzero_elements_per_token():
    c = torch.tensor([[[0.0, 2.0, 0.5], [0.0, 0.0, 0.0]]])
    assert l0_per_token(c).tolist() == [[2, 0]]


def test_alive_elements_over_a_window():
    freq = ActivationFrequency(n_dict=4, window_tokens=4)
    freq.update(torch.tensor([1.0, 0, 0, 0]), n_tokens=2)
    assert freq.alive() == (1, 2)  # open window: counted so far
    freq.update(torch.tensor([0, 1.0, 0, 0]), n_tokens=2)  # closes the window: 2 alive of 4 tokens
    freq.update(torch.tensor([0, 0, 1.0, 0]), n_tokens=2)
    assert freq.alive() == (2, 4)  # the last closed window is reported
