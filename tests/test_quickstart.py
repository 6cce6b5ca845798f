"""The quickstart configs train on the built-in model and data with no network."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_sae import load_run_config
from e2e_sae.train import train

ROOT = Path(__file__).resolve().parents[1]
SHORT = {
    "train.n_samples": 32,
    "train.checkpoint_every_n_samples": 16,
    "data.n_eval_samples": 4,
    "train.act_frequency_n_tokens": 1024,
}


def _assert_quickstart_metrics(metrics: dict) -> None:
    assert metrics["n_samples"] == 32 and metrics["eval_tokens"] == 4 * 128
    assert 3.0 < metrics["ce_loss_original"] < 4.5  # the trained built-in model, not a random one
    assert metrics["l0"] > 0 and metrics["n_dict_elements"] == 8 * 128


# Mode e2e trains through the CLI below (the same config and checks), so it is not repeated here.
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["local", "e2e_ds"])
def test_quickstart_mode_trains_a_few_steps(tmp_path, mode):
    cfg = load_run_config(
        ROOT / "e2e_sae" / "configs" / f"quickstart_{mode}.yaml", {**SHORT, "output_dir": str(tmp_path / mode)}
    )
    metrics = train(cfg, progress=False)
    _assert_quickstart_metrics(metrics)


@pytest.mark.slow
def test_train_cli_runs_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(
        {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    )
    args = [f"--set={k}={v}" for k, v in {**SHORT, "output_dir": str(tmp_path / "run")}.items()]
    proc = subprocess.run(
        [sys.executable, "-m", "e2e_sae.train", "e2e_sae/configs/quickstart_e2e.yaml", *args, "--no-progress"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["final"] is True and "ce_loss_increase" in metrics
    _assert_quickstart_metrics(metrics)
