"""The hub model card of `sweeps export` (sweeps/reporting/release.py)."""

from sweeps.reporting.release import model_card


def _entry(**fields):
    entry = {
        "sae_id": "local_L1_r8_s0.3496_seed0",
        "mode": "local",
        "trained": "local, 2000 samples",
        "finetune": None,
        "architecture": "relu",
        "hook": "blocks.1.hook_resid_pre",
        "k": None,
        "sparsity_coeff": 0.34955521829456,
        "l0": 476.51234,
        "ce_loss_increase": 0.29111111,
        "frontiers": ["l0"],
    }
    entry.update(fields)
    return entry


def test_model_card_prints_a_searched_coefficient_with_4_significant_digits():
    card = model_card({"sweep": "quickstart", "model": "builtin:pycode", "saes": [_entry()]})
    row = next(line for line in card.splitlines() if line.startswith("| `local_L1"))
    assert "| 0.3496 | 476.5 | 0.2911 |" in row, row
    assert "0.34955521829456" not in card


def test_model_card_prints_k_as_an_integer():
    card = model_card({"sweep": "s", "model": "m", "saes": [_entry(architecture="topk", k=32, sparsity_coeff=None)]})
    assert "| 32 | 476.5 |" in card
