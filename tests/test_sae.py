"""The SAE: shapes, unit-norm decoder columns, reference parameter names, checkpoint loading."""

import torch

from e2e_sae.sae import SAE, load_sae, load_sae_state_dict


def test_forward_shapes_and_relu():
    sae = SAE(d_in=8, n_dict_elements=24)
    acts = torch.randn(2, 5, 8)
    acts_hat, c = sae(acts)
    assert acts_hat.shape == (2, 5, 8) and c.shape == (2, 5, 24)
    assert (c >= 0).all()


def test_decoder_columns_are_used_at_unit_norm():
    sae = SAE(8, 24)
    with torch.no_grad():
        sae.decoder.weight.mul_(7.0)
    assert torch.allclose(sae.dict_elements.norm(dim=0), torch.ones(24), atol=1e-6)
    c = torch.zeros(1, 1, 24)
    c[0, 0, 3] = 2.0
    expected = 2.0 * sae.decoder.weight[:, 3] / sae.decoder.weight[:, 3].norm() + sae.decoder.bias
    assert torch.allclose(sae.decode(c)[0, 0], expected, atol=1e-6)


def test_decoder_init_is_orthogonal():
    sae = SAE(16, 8)  # fewer elements than dims: columns orthonormal
    w = sae.decoder.weight
    assert torch.allclose(w.T @ w, torch.eye(8), atol=1e-5)


def test_parameter_names_match_reference_library():
    shapes = {k: tuple(v.shape) for k, v in SAE(8, 24).state_dict().items()}
    assert shapes == {
        "encoder.0.weight": (24, 8),
        "encoder.0.bias": (24,),
        "decoder.weight": (8, 24),
        "decoder.bias": (8,),
    }


def test_loads_reference_checkpoint_with_hyphenated_keys(tmp_path):
    """The authors' e2e_sae saves ``saes.state_dict()`` keyed ``blocks-6-hook_resid_pre.<param>``."""
    saes = {"blocks-1-hook_resid_pre": SAE(8, 16), "blocks-10-hook_resid_pre": SAE(8, 32)}
    blob = {f"{name}.{k}": v for name, sae in saes.items() for k, v in sae.state_dict().items()}
    torch.save(blob, tmp_path / "samples_400000.pt")
    sae = load_sae(tmp_path / "samples_400000.pt", position="blocks.1.hook_resid_pre")
    assert sae.n_dict_elements == 16  # blocks.1, not blocks.10 (no substring matching)
    for k, v in saes["blocks-1-hook_resid_pre"].state_dict().items():
        assert torch.equal(sae.state_dict()[k], v)
    state = load_sae_state_dict(tmp_path / "samples_400000.pt", "blocks.10.hook_resid_pre")
    assert state["encoder.0.weight"].shape == (32, 8)
