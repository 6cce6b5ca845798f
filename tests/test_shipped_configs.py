"""Every run config and sweep file we ship validates (the hub-backed ones without the network)."""

from pathlib import Path

import pytest

from e2e_sae.config import load_run_config
from sweeps.planning.spec import expand_trials, load_sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "e2e_sae" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_run_config_validates(path):
    cfg = load_run_config(path)
    assert cfg.mode in path.name.replace("e2e_ds", "e2e+ds")


def test_paper_gpt2_settings():
    cfg = load_run_config(ROOT / "e2e_sae" / "configs" / "gpt2_layer6_e2e_ds.yaml")
    assert (cfg.loss.logits_kl.coeff, cfg.loss.in_to_orig.total_coeff) == (0.5, 2.5)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.effective_batch_size) == (5e-4, 8, 16)
    assert (cfg.train.warmup_samples, cfg.train.min_lr_factor, cfg.train.max_grad_norm) == (20000, 0.1, 10.0)
    assert cfg.data.n_ctx == 1024 and cfg.sae.dict_size_to_input_ratio == 60


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_sweep_file_expands(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    trials = expand_trials(load_sweep(path))
    assert len(trials) > 1 and {t.mode for t in trials} == {"local", "e2e", "e2e+ds"}
