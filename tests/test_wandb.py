"""W&B logging works offline (no server) and is skipped entirely when disabled."""

import time

import pytest

from e2e_sae import run_config_from_dict
from e2e_sae.train import train


@pytest.mark.slow
def test_offline_run_logs_metrics_and_summary(tiny_config, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = run_config_from_dict(tiny_config(**{"wandb.mode": "offline", "wandb.project": "test", "wandb.group": "g"}))
    metrics = train(cfg, progress=False)
    runs = list((cfg.output_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    log_file = next(runs[0].glob("*.wandb"))  # the offline log that `wandb sync` uploads
    keys = [k.encode() for k in ("ce_loss_increase", "alive_dict_elements", "l0", "loss/sparsity")]
    deadline = time.monotonic() + 60  # wandb's writer process may still be flushing on a loaded machine
    while not all(k in log_file.read_bytes() for k in keys) and time.monotonic() < deadline:
        time.sleep(0.5)
    record = log_file.read_bytes()
    for key in keys:
        assert key in record
    assert metrics["final"] is True


@pytest.mark.slow
def test_disabled_writes_no_wandb_files(tiny_config):
    cfg = run_config_from_dict(tiny_config(**{"wandb.mode": "disabled"}))
    train(cfg, progress=False)
    assert not (cfg.output_dir / "wandb").exists()
