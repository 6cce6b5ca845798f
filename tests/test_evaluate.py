"""``python -m e2e_sae.evaluate``: scores an existing SAE with the training run's own eval."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import hf_run

from e2e_sae.config import run_config_from_dict
from e2e_sae.evaluate import main
from e2e_sae.train import train

pytestmark = pytest.mark.slow  # trains a run first


@pytest.fixture(scope="module")
def trained(hf_assets, tmp_path_factory):
    """One short e2e run on the tiny GPT-2: its output dir and final metrics."""
    out = tmp_path_factory.mktemp("evaluate") / "run"
    raw = hf_run(hf_assets, output_dir=str(out))
    raw["train"].update(n_samples=32)
    return out, train(run_config_from_dict(raw), progress=False)


def test_evaluating_our_checkpoint_reproduces_the_runs_final_metrics(trained, tmp_path):
    run, final = trained
    ckpt = next((run / "checkpoints").glob("*/checkpoint.pt"))
    assert main([str(run / "config.yaml"), "--sae", str(ckpt), "--out", str(tmp_path / "eval")]) == 0
    scored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(final) - {"n_samples", "step", "final"} <= set(scored)  # every metric training reports
    for key in (
        "ce_loss_original",
        "ce_loss_spliced",
        "ce_loss_increase",
        "ce_loss_score",
        "kl",
        "l0",
        "mse",
        "explained_variance",
        "explained_variance_per_token_mean",
        "top1_agreement",
    ):
        assert scored[key] == pytest.approx(final[key], rel=1e-6, abs=1e-9), key
    assert scored["alive_window_tokens"] == 8 * 16 and scored["weight_processing"] == "hooked_transformer"
    assert main([str(run / "config.yaml"), "--sae", str(ckpt), "--out", str(tmp_path / "eval")]) == 2  # no overwrite


def test_authors_key_format_is_picked_by_position(trained, tmp_path, capsys):
    run, final = trained
    sae = torch.load(next((run / "checkpoints").glob("*/checkpoint.pt")), weights_only=True)["sae"]
    other = {k: torch.zeros_like(v) for k, v in sae.items()}
    # The authors' SAETransformer.saes.state_dict(): one SAE per position, keyed by the hook name with '-'.
    theirs = {
        **{f"blocks-1-hook_resid_pre.{k}": v for k, v in sae.items()},
        **{f"blocks-0-hook_resid_pre.{k}": v for k, v in other.items()},
    }
    torch.save(theirs, tmp_path / "samples_32.pt")
    config = tmp_path / "eval.yaml"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["sae"]["dict_size_to_input_ratio"] = 7  # taken from the file instead
    config.write_text(yaml.safe_dump(cfg))
    assert (
        main(
            [
                str(config),
                "--sae",
                str(tmp_path / "samples_32.pt"),
                "--position",
                "blocks.1.hook_resid_pre",
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    scored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert scored["ce_loss_increase"] == pytest.approx(final["ce_loss_increase"], rel=1e-6)
    assert scored["l0"] == pytest.approx(final["l0"]) and scored["n_dict_elements"] == 128
    # Their SAEs were trained on HookedTransformer-processed models: refused on an unprocessed one.
    assert (
        main(
            [
                str(config),
                "--sae",
                str(tmp_path / "samples_32.pt"),
                "--position",
                "blocks.1.hook_resid_pre",
                "--out",
                str(tmp_path / "raw"),
                "--set",
                "model.weight_processing=none",
            ]
        )
        == 2
    )
    assert "model.weight_processing=hooked_transformer, this model uses none" in capsys.readouterr().err
    assert not (tmp_path / "raw").exists()
