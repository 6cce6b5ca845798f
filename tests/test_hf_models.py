"""The path real users take: HF model directories through TransformerBridge.boot_transformers, with
HookedTransformer weight processing, on tiny models built offline (conftest ``hf_assets``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import hf_run

from e2e_sae.config import ConfigError, run_config_from_dict
from e2e_sae.lm import load_language_model
from e2e_sae.sae import SAE
from e2e_sae.spliced import SplicedModel
from e2e_sae.train import main as train_main
from e2e_sae.train import train


def loss_rows(out_dir):
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"]


def test_processing_centres_the_residual_and_keeps_log_probs(hf_assets):
    raw = load_language_model(str(hf_assets["gpt2"]), weight_processing="none")
    proc = load_language_model(str(hf_assets["gpt2"]), weight_processing="hooked_transformer")
    tokens = torch.randint(0, 400, (2, 16), generator=torch.Generator().manual_seed(0))
    raw_logits, raw_cache = raw.run_with_cache(tokens)
    logits, cache = proc.run_with_cache(tokens)
    for layer in range(3):
        r, p = raw_cache[f"blocks.{layer}.hook_resid_pre"], cache[f"blocks.{layer}.hook_resid_pre"]
        assert (r - p).abs().max() > 1e-3  # processing changes the residual stream ...
        torch.testing.assert_close(p, r - r.mean(-1, keepdim=True), atol=1e-6, rtol=0)  # ... by centring it
    torch.testing.assert_close(logits.log_softmax(-1), raw_logits.log_softmax(-1), atol=1e-5, rtol=0)
    assert set(proc.hook_dict) == set(raw.hook_dict)  # our hook names are unchanged


@pytest.mark.parametrize("model", ["gpt2", "neox"])
def test_splice_fast_path_equals_full_hooked_forward(hf_assets, model):
    lm = load_language_model(str(hf_assets[model]), weight_processing="hooked_transformer")
    torch.manual_seed(0)
    sae = SAE(64, 128)
    tokens = torch.randint(0, 400, (2, 16), generator=torch.Generator().manual_seed(1))
    fast = SplicedModel(lm, sae, "blocks.1.hook_resid_pre", ["blocks.1.hook_resid_post"])
    full = SplicedModel(lm, sae, "blocks.1.hook_resid_pre", ["blocks.1.hook_resid_post"], start_at_sae_layer=False)
    assert fast.sae_layer == 1 and full.sae_layer is None
    a, b = fast.clean_forward(tokens), full.clean_forward(tokens)
    torch.testing.assert_close(a.acts, b.acts)
    sa, sb = fast.spliced_forward(tokens, a), full.spliced_forward(tokens, b)
    torch.testing.assert_close(sa.logits, sb.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        sa.downstream["blocks.1.hook_resid_post"], sb.downstream["blocks.1.hook_resid_post"], atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        fast.replaced_logits(tokens, torch.zeros_like(a.acts)),
        full.replaced_logits(tokens, torch.zeros_like(a.acts)),
        atol=1e-5,
        rtol=1e-5,
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["local", "e2e", "e2e+ds"])
def test_each_mode_trains_on_raw_text_and_lowers_its_loss(hf_assets, tmp_path, mode):
    cfg = run_config_from_dict(hf_run(hf_assets, mode=mode, output_dir=str(tmp_path / "run")))
    metrics = train(cfg, progress=False)
    losses = loss_rows(tmp_path / "run")
    assert losses[-1] < losses[0]
    assert 0 < metrics["l0"] <= 128 and metrics["ce_loss_original"] > 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["weight_processing"] == "hooked_transformer"
    ckpt = torch.load(next((tmp_path / "run" / "checkpoints").glob("*/checkpoint.pt")), weights_only=True)
    assert ckpt["weight_processing"] == "hooked_transformer"


def test_neox_rotary_model_trains_a_few_steps(hf_assets, tmp_path):
    raw = hf_run(hf_assets, model="neox", output_dir=str(tmp_path / "run"))
    raw["train"].update(n_samples=40)
    metrics = train(run_config_from_dict(raw), progress=False)
    assert metrics["step"] == 10 and metrics["kl"] > 0 and metrics["ce_loss_original"] > 0


def test_raw_text_is_tokenised_with_the_models_own_tokenizer(hf_assets):
    from transformers import AutoTokenizer

    from e2e_sae.data import load_eval_tokens
    from e2e_sae.tokenizer import resolve_tokenizer

    cfg = run_config_from_dict(hf_run(hf_assets))
    model = load_language_model(str(hf_assets["gpt2"]), weight_processing="hooked_transformer")
    tokens = load_eval_tokens(cfg.data.eval, 16, 2, resolve_tokenizer(cfg, model))
    tok = AutoTokenizer.from_pretrained(str(hf_assets["gpt2"]))
    expected = []
    for line in hf_assets["eval"].read_text().splitlines():
        # TransformerBridge's tokenizer prepends BOS (as HookedTransformer's did); rows end with EOS
        expected += [tok.bos_token_id] + tok(json.loads(line)["text"])["input_ids"] + [tok.eos_token_id]
        if len(expected) >= 32:
            break
    assert tokens.flatten().tolist() == expected[:32]
    assert len(set(expected)) > 10  # real BPE ids, not an empty or unknown-only encoding


@pytest.mark.slow
def test_pretokenised_save_to_disk_dataset_trains_and_resumes_exactly(hf_assets, tmp_path):
    import datasets

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 40), ("test", 8)):
        ids = torch.randint(0, 512, (n, 16), generator=g).tolist()
        datasets.Dataset.from_dict({"input_ids": ids}).save_to_disk(str(tmp_path / f"ds_{split}"))
    raw = hf_run(hf_assets, output_dir=str(tmp_path / "straight"))
    raw["data"].update(train={"name": str(tmp_path / "ds_train")}, eval={"name": str(tmp_path / "ds_test")})
    raw["train"].update(n_samples=64, checkpoint_every_n_samples=32, eval_every_n_samples=32)
    straight = train(run_config_from_dict(raw), progress=False)

    class Stop(Exception):
        pass

    def stop_at_first_checkpoint(metrics, ckpt):
        if ckpt is not None and not metrics["final"]:
            raise Stop(ckpt)

    cfg = run_config_from_dict(raw, {"output_dir": str(tmp_path / "resumed")})
    with pytest.raises(Stop) as stopped:
        train(cfg, reporter=stop_at_first_checkpoint, progress=False)
    resumed = train(cfg, resume_from=stopped.value.args[0], progress=False)
    assert resumed == straight


@pytest.mark.slow
def test_pretrained_sae_under_other_processing_is_refused_unless_forced(hf_assets, tmp_path):
    raw = hf_run(hf_assets, mode="local", output_dir=str(tmp_path / "first"))
    raw["train"].update(n_samples=8)
    train(run_config_from_dict(raw), progress=False)
    ckpt = next((tmp_path / "first" / "checkpoints").glob("*/checkpoint.pt"))
    other = run_config_from_dict(
        raw,
        {"output_dir": str(tmp_path / "second"), "sae.pretrained_path": str(ckpt), "model.weight_processing": "none"},
    )
    with pytest.raises(
        ConfigError,
        match="trained under model.weight_processing=hooked_transformer, this model "
        "uses none.*ignore_weight_processing_mismatch",
    ):
        train(other, progress=False)
    assert not (tmp_path / "second").exists()
    forced = run_config_from_dict(
        raw,
        {
            "output_dir": str(tmp_path / "forced"),
            "sae.pretrained_path": str(ckpt),
            "model.weight_processing": "none",
            "sae.ignore_weight_processing_mismatch": True,
        },
    )
    assert train(forced, progress=False)["n_samples"] == 8


def test_native_models_are_never_processed(tiny_config):
    assert run_config_from_dict(tiny_config()).model.weight_processing == "none"
    with pytest.raises(ConfigError, match="model.weight_processing: hooked_transformer applies to HF models only"):
        run_config_from_dict(tiny_config(model__weight_processing="hooked_transformer"))


def _cli_error(tmp_path, raw, capsys) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert train_main([str(path), "--no-progress"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # not the load bars
    assert len(lines) == 1
    return lines[0]


def test_bad_input_is_one_line_naming_the_field(hf_assets, tmp_path, capsys):
    from transformers import XLNetConfig, XLNetLMHeadModel

    err = _cli_error(tmp_path, hf_run(hf_assets, model="notok", output_dir=str(tmp_path / "a")), capsys)
    assert err.startswith("error: data.tokenizer:") and "raw text" in err

    small = SAE(32, 64)
    torch.save(small.state_dict(), tmp_path / "sae32.pt")
    raw = hf_run(hf_assets, output_dir=str(tmp_path / "b"))
    raw["sae"]["pretrained_path"] = str(tmp_path / "sae32.pt")
    err = _cli_error(tmp_path, raw, capsys)
    assert err.startswith("error: sae.pretrained_path:") and "d_in=32" in err and "d_model=64" in err

    XLNetLMHeadModel(XLNetConfig(n_layer=2, d_model=32, n_head=2, d_inner=64, vocab_size=100)).save_pretrained(
        tmp_path / "xlnet"
    )
    raw = hf_run(hf_assets, output_dir=str(tmp_path / "c"))
    raw["model"]["name"] = str(tmp_path / "xlnet")
    err = _cli_error(tmp_path, raw, capsys)
    assert err.startswith("error: model.name: TransformerBridge cannot load") and "XLNetLMHeadModel" in err
    assert not any((tmp_path / d).exists() for d in ("a", "b", "c"))


@pytest.mark.slow
def test_short_sweep_on_the_tiny_hf_model(hf_assets, tmp_path):
    from ray_fixtures import ray_free_env
    from sweep_fixtures import write_sweep

    from sweeps.reporting.results import load_trials

    run = hf_run(hf_assets)
    run["train"].update(n_samples=32, checkpoint_every_n_samples=16)
    spec = {
        "name": "hf",
        "run": run,
        "axes": {"mode": ["local", "e2e"], "layer": [1], "sparsity_coeff": [0.05]},
        "resources_per_trial": {"cpu": 1},
        "storage_path": str(tmp_path / "results"),
        "checkpoint_every_n_samples": 16,
        "max_failures": 0,
    }
    path = write_sweep(tmp_path, spec)
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps", "run", str(path)],
        capture_output=True,
        text=True,
        env=ray_free_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = load_trials(tmp_path / "results" / "hf")
    assert [t.state for t in trials] == ["finished", "finished"]
    assert all(t.metrics["ce_loss_original"] > 0 and t.metrics["l0"] > 0 for t in trials)
