"""A run directory is laid out as e2e_sae.run_dir says, and a training run writes exactly that."""

import pytest

from e2e_sae import run_config_from_dict
from e2e_sae.checkpoint import latest_checkpoint, list_checkpoints
from e2e_sae.run_dir import RunDir, checkpoint_dir_name, is_checkpoint_dir_name, samples_of
from e2e_sae.train import train


def test_checkpoint_names_sort_in_training_order_and_give_back_their_sample_count(tmp_path):
    names = [checkpoint_dir_name(n) for n in (32, 1000, 64, 12000)]
    assert sorted(names) == [checkpoint_dir_name(n) for n in (32, 64, 1000, 12000)]
    assert all(is_checkpoint_dir_name(n) for n in names) and not is_checkpoint_dir_name(".tmp_" + names[0])
    assert [samples_of(tmp_path / n) for n in names] == [32, 1000, 64, 12000]


@pytest.mark.slow
def test_a_run_writes_the_documented_layout(tiny_config):
    cfg = run_config_from_dict(tiny_config("local"))
    train(cfg, progress=False)
    run = RunDir(cfg.output_dir)
    assert run.config.is_file() and run.metrics_log.is_file() and run.metrics.is_file()
    assert [samples_of(p) for p in list_checkpoints(run.checkpoints)] == [32, 64]
    assert latest_checkpoint(cfg.output_dir) == run.checkpoint(64) and not run.diverged.exists()
