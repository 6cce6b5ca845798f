"""Bad configs fail before any compute with one line naming the field, and touch nothing on disk."""

import subprocess
import sys

import pytest
import yaml

from e2e_sae import ConfigError, run_config_from_dict
from e2e_sae.train import train

CASES = [
    ({"sae.bogus": 1}, "sae.bogus: unknown key"),
    ({"loss.sparsity.coeff": -1.0}, "loss.sparsity.coeff"),
    ({"sae.dict_size_to_input_ratio": 0}, "sae.dict_size_to_input_ratio"),
    ({"sae.position": "blocks.7.hook_resid_pre"}, "sae.position: layer 7 is out of range"),
    ({"sae.position": "blocks.1.hook_resid_pree"}, "sae.position: unknown hook point"),
    ({"data.n_ctx": 32}, "data.n_ctx: 32 exceeds the model's context 16"),
    ({"train.batch_size": 3}, "train.effective_batch_size (8) must be a multiple of train.batch_size (3)"),
    ({"data.train.name": "/nonexistent/train.jsonl"}, "data.train.name: dataset path /nonexistent/train.jsonl does not exist"),
    ({"mode": "e2e-ds"}, "mode:"),
]


@pytest.mark.parametrize("overrides,message", CASES)
def test_bad_config_is_one_line_naming_the_field(tiny_config, overrides, message):
    with pytest.raises(ConfigError) as err:
        cfg = run_config_from_dict(tiny_config(), overrides)
        train(cfg, progress=False)
    text = str(err.value)
    assert message in text and "\n" not in text


@pytest.mark.slow
def test_cli_exits_nonzero_and_leaves_existing_run_untouched(tiny_config, tmp_path):
    raw = tiny_config()
    run_dir = tmp_path / "existing_run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text('{"l0": 1.0}')
    raw["output_dir"] = str(run_dir)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    for extra in ([], ["--set", "sae.dict_size_to_input_ratio=-2"]):
        proc = subprocess.run([sys.executable, "-m", "e2e_sae.train", str(path), *extra],
                              capture_output=True, text=True)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert "output_dir" in proc.stderr or "dict_size_to_input_ratio" in proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.json"]
    assert (run_dir / "metrics.json").read_text() == '{"l0": 1.0}'


def test_mode_presets_fill_loss_terms_and_stay_overridable(tiny_config):
    local = run_config_from_dict(tiny_config("local"))
    assert local.loss.out_to_in.coeff == 1.0 and local.loss.logits_kl is None and not local.loss.needs_logits
    ds = run_config_from_dict(tiny_config("e2e+ds"))
    assert ds.loss.logits_kl.coeff == 0.5 and ds.loss.in_to_orig.total_coeff == 2.5
    custom = run_config_from_dict(tiny_config("e2e+ds"), {"loss.logits_kl.coeff": 2.0})
    assert custom.loss.logits_kl.coeff == 2.0 and custom.loss.in_to_orig.total_coeff == 2.5
