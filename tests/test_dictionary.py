"""The library side of `sweeps analyse`: one pass over the eval tokens, geometry, output effects."""

import math

import pytest
import torch
from conftest import TINY_MODEL

from e2e_sae.dictionary import (
    dictionary_pass,
    direct_logit_effect,
    effective_unembedding,
    max_cos_sim_across,
    max_cos_sim_within,
    sample_features,
)
from e2e_sae.native_lm import boot_native_lm
from e2e_sae.sae import SAE
from e2e_sae.spliced import SplicedModel


@pytest.fixture(scope="module")
def tiny_spliced():
    model = boot_native_lm(dict(TINY_MODEL)).requires_grad_(False).eval()
    torch.manual_seed(0)
    sae = SAE(16, 32)
    with torch.no_grad():  # a spread of firing rates: some elements rare, some dense, some dead
        sae.encoder[0].bias.copy_(torch.linspace(-0.6, 0.3, 32))
        sae.encoder[0].bias[:3] = -1e3
    tokens = torch.randint(0, TINY_MODEL["d_vocab"], (7, 16), generator=torch.Generator().manual_seed(3))
    return SplicedModel(model, sae.eval(), "blocks.1.hook_resid_pre"), tokens


def brute_force(spliced, tokens):
    with torch.no_grad():
        acts = spliced.clean_forward(tokens, need_logits=False).acts
        acts_hat, c = spliced.sae(acts)
    return acts, acts_hat, c


def test_pass_counts_top_k_and_windows_equal_brute_force(tiny_spliced):
    spliced, tokens = tiny_spliced
    k, left, right = 5, 3, 2
    stats = dictionary_pass(spliced, tokens, batch_size=3, k=k, left=left, right=right)  # 3 batches, uneven
    acts, acts_hat, c = brute_force(spliced, tokens)
    flat = c.reshape(-1, 32)
    assert torch.equal(stats.fire_counts, (flat > 0).sum(0))
    assert stats.n_tokens == 7 * 16 and stats.n_dead == int(((flat > 0).sum(0) == 0).sum()) >= 3
    assert stats.l0 == pytest.approx(float((flat > 0).sum()) / (7 * 16))
    assert 0 < stats.n_dense < 29  # the spread of biases gives dense and non-dense alive elements
    values, index = flat.topk(k, dim=0)
    torch.testing.assert_close(stats.top_values, values)
    # the same token indices (ties aside: compare the activation found at each reported index)
    torch.testing.assert_close(flat.gather(0, stats.top_index), values)
    padded = torch.nn.functional.pad(c, (0, 0, left, right))
    edges = 0
    for f in range(32):
        for j in range(k):
            if stats.top_values[j, f] == 0:
                continue
            seq, pos = divmod(int(stats.top_index[j, f]), 16)
            edges += pos < left or pos >= 16 - right
            expected = padded[seq, pos : pos + left + 1 + right, f]
            torch.testing.assert_close(stats.top_windows[j, :, f], expected)
            assert stats.top_windows[j, left, f] == stats.top_values[j, f]  # the token itself in the middle
    assert edges > 0  # windows cut by a sequence's start or end were checked too


def test_norm_ratio_is_the_mean_over_positions_after_the_first(tiny_spliced):
    spliced, tokens = tiny_spliced
    stats = dictionary_pass(spliced, tokens, batch_size=4)
    acts, acts_hat, _ = brute_force(spliced, tokens)
    ratio = acts_hat.norm(dim=-1) / acts.norm(dim=-1)  # [seq, pos]
    assert stats.norm_ratio == pytest.approx(float(ratio[:, 1:].mean()), rel=1e-5)
    assert stats.norm_ratio_tokens == 7 * 15
    assert not math.isclose(float(ratio.mean()), float(ratio[:, 1:].mean()), rel_tol=1e-4)  # position 0 differs


def test_max_cos_sim_on_a_hand_example():
    s = 1 / math.sqrt(2)
    d = torch.tensor([[1.0, 0.0, s, 0.0], [0.0, 1.0, s, 0.0], [0.0, 0.0, 0.0, 3.0]])  # columns: x, y, (x+y)/√2, 3z
    torch.testing.assert_close(max_cos_sim_within(d), torch.tensor([s, s, s, 0.0]))
    torch.testing.assert_close(max_cos_sim_within(d, chunk=1), torch.tensor([s, s, s, 0.0]))
    b = torch.tensor([[1.0], [0.0], [0.0]]) * 2  # only x
    torch.testing.assert_close(max_cos_sim_across(d, b), torch.tensor([1.0, 0.0, s, 0.0]))
    torch.testing.assert_close(max_cos_sim_across(b, d), torch.tensor([1.0]))
    with pytest.raises(ValueError):
        max_cos_sim_across(d, torch.ones(2, 2))


def test_sample_features_most_frequent_random_and_rarest_alive():
    counts = torch.tensor([0, 50, 3, 9, 0, 1, 20, 7, 2, 40, 5, 11])
    s = sample_features(counts, 3, seed=1)
    assert s["most frequent"] == [1, 9, 6]
    assert s["rarest alive"] == [5, 8, 2]
    assert len(s["random"]) == 3 and set(s["random"]) <= {3, 7, 10, 11}
    assert s == sample_features(counts, 3, seed=1)  # seeded
    assert sample_features(torch.tensor([0, 4, 1]), 5) == {"most frequent": [1, 2], "random": [], "rarest alive": []}


def assert_direct_effect_is_the_linearised_logit_change(model):
    """Along a direction d, at a final residual x orthogonal to d after centring, the logits
    unembed(ln_final(x + eps d)) move along our direct effect of d (cosine ~ 1)."""
    d_model = model.cfg.d_model
    g = torch.Generator().manual_seed(0)
    d, x = torch.randn(d_model, 1, generator=g), torch.randn(d_model, generator=g) * 3
    centre = effective_unembedding(model)[1]
    dc = d[:, 0] - d[:, 0].mean() if centre else d[:, 0]
    x = x - (x @ dc) / (dc @ dc) * dc  # so the norm's scale is unchanged to first order
    with torch.no_grad():

        def logits(v):
            return model.unembed(model.ln_final(v[None, None]))[0, 0]

        eps = 1e-3
        change = (logits(x + eps * d[:, 0]) - logits(x - eps * d[:, 0])) / (2 * eps)
    w_u, _ = effective_unembedding(model)
    ours = dc @ w_u
    assert torch.nn.functional.cosine_similarity(change, ours, dim=0) > 0.999
    effect = direct_logit_effect(model, d, k=3)
    assert effect["boost_ids"][0].tolist() == change.topk(3).indices.tolist()
    assert effect["suppress_ids"][0].tolist() == (-change).topk(3).indices.tolist()


def test_direct_logit_effect_on_the_builtin_model():
    from e2e_sae.lm import load_language_model

    assert_direct_effect_is_the_linearised_logit_change(load_language_model("builtin:pycode"))


@pytest.mark.parametrize("processing", ["hooked_transformer", "none"])
def test_direct_logit_effect_on_an_hf_model(hf_assets, processing):
    from e2e_sae.lm import load_language_model

    model = load_language_model(str(hf_assets["gpt2"]), weight_processing=processing)
    assert_direct_effect_is_the_linearised_logit_change(model)


def test_initial_directions_are_the_runs_seeded_initialisation(tiny_config):
    from e2e_sae.assemble import splice_sae
    from e2e_sae.config import run_config_from_dict
    from e2e_sae.dictionary import initial_directions

    cfg = run_config_from_dict(tiny_config("local", seed=3))
    model = boot_native_lm(dict(TINY_MODEL))
    expected = splice_sae(cfg, model, torch.device("cpu")).sae.dict_elements.detach()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    init = initial_directions(cfg, 16)
    assert torch.equal(init, expected)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert not torch.equal(init, initial_directions(run_config_from_dict(tiny_config("local", seed=4)), 16))
