"""The throughput benchmark: its JSON, its FLOP count, its errors; the reference comparison when a
prepared reference venv is named by E2E_SAE_REFERENCE_DIR (it needs a download of several hundred MB)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from e2e_sae.bench.__main__ import main
from e2e_sae.bench.common import PHASES
from e2e_sae.bench.throughput import load_bench_config, peak_tflops, train_flops_per_token
from e2e_sae.model_shape import ModelShape

DOCUMENTED_KEYS = {
    "mode",
    "position",
    "n_dict_elements",
    "batch_size",
    "n_ctx",
    "grad_accum_steps",
    "steps",
    "tokens_per_step",
    "tokens_per_s",
    "ms_per_step",
    "peak_memory_mib",
    "peak_memory_kind",
    "flops_per_step",
    "achieved_tflops",
    "peak_tflops",
    "mfu",
    "first_step",
    "device_name",
    "cpu_model",
    "torch_version",
    "torch_threads",
    "command",
    "sae_kernel",
    "train_l0",
}

# The conftest tiny model (3 layers, d_model 16, 4 heads of 4, d_mlp 32, vocab 40), n_ctx 16, n_dict 32.
TINY_SHAPE = ModelShape(n_layers=3, n_ctx=16, d_model=16, n_heads=4, d_head=4, d_mlp=32, d_vocab=40)


def write_config(tmp_path: Path, raw: dict) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def run_bench(tmp_path: Path, raw: dict, *extra: str) -> dict:
    out = tmp_path / "bench.json"
    assert main([write_config(tmp_path, raw), "--steps", "2", "--warmup", "1", "--out", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_bench_writes_json_with_documented_keys_and_positive_throughput(tmp_path, tiny_config):
    result = run_bench(tmp_path, tiny_config("e2e"))
    assert DOCUMENTED_KEYS <= set(result)
    assert result["tokens_per_s"] > 0
    assert set(result["ms_per_step"]) == {*PHASES, "total"}
    assert all(v >= 0 for v in result["ms_per_step"].values())
    assert result["ms_per_step"]["total"] == pytest.approx(sum(result["ms_per_step"][k] for k in PHASES))
    assert result["peak_memory_mib"] > 0 and result["peak_memory_kind"] == "cpu_peak_rss"
    assert result["mfu"] is None  # CPU: no peak known without --peak-tflops
    # batch 4, grad accumulation 2 (effective batch 8), n_ctx 16
    assert result["tokens_per_step"] == 4 * 2 * 16
    assert result["n_dict_elements"] == 32
    assert result["sae_kernel"] == "sparse"  # auto on CPU
    assert 0 < result["train_l0"] <= 32
    terms = result["first_step"]["terms"]
    assert set(terms) == {"loss/sparsity", "loss/logits_kl"} and result["first_step"]["grad_norm"] > 0


def test_bench_flops_in_json_follow_the_shape_and_peak_override_gives_mfu(tmp_path, tiny_config):
    result = run_bench(tmp_path, tiny_config("local"), "--peak-tflops", "2.0")
    per_token = train_flops_per_token(TINY_SHAPE, n_ctx=16, n_dict=32, layers_before=1, needs_logits=False)
    assert result["flops_per_step"] == per_token * 4 * 2 * 16
    assert result["mfu"] == pytest.approx(result["achieved_tflops"] / 2.0)
    assert set(result["first_step"]["terms"]) == {"loss/sparsity", "loss/out_to_in"}


def test_flop_count_matches_hand_computation():
    # Per token, one block forward: W_Q,W_K,W_V,W_O 4 * 2*16*16 = 2048, MLP 2 * 2*16*32 = 2048 (linear 4096);
    # attention q k^T and pattern v: 2 * 2*16*16 = 1024. Forward 5120; backward (frozen weights) 4096 + 2*1024.
    block_fwd, block_bwd, unembed = 5120, 6144, 2 * 16 * 40
    sae_fwd, sae_bwd = 2 * (2 * 16 * 32), 3 * (2 * 16 * 32)  # 2048, 3072
    e2e = (3 * block_fwd + unembed) + sae_fwd + 2 * block_fwd + unembed + sae_bwd + 2 * block_bwd + unembed
    assert e2e == 46848
    assert train_flops_per_token(TINY_SHAPE, 16, 32, layers_before=1, needs_logits=True) == 46848
    local = 1 * block_fwd + sae_fwd + sae_bwd
    assert train_flops_per_token(TINY_SHAPE, 16, 32, layers_before=1, needs_logits=False) == local == 10240


def test_peak_table_picks_the_device_and_precision():
    assert peak_tflops("NVIDIA H100 80GB HBM3", bf16=True) == 989.4
    assert peak_tflops("NVIDIA H100 PCIe", bf16=True) == 756.0
    assert peak_tflops("NVIDIA H200", bf16=False) == 66.9
    assert peak_tflops("NVIDIA A100-SXM4-80GB", bf16=False) == 19.5
    assert peak_tflops("NVIDIA GeForce RTX 3090", bf16=True) is None


def test_gpt2_small_preset_builds_the_architecture_at_the_middle_layer():
    cfg = load_bench_config(None, ["train.device=cpu"], model="gpt2-small-random")
    native = cfg.model.native
    assert (native["n_layers"], native["d_model"], native["n_heads"], native["d_mlp"]) == (12, 768, 12, 3072)
    assert (native["n_ctx"], native["d_vocab"], native["act_fn"]) == (1024, 50257, "gelu_new")
    assert cfg.sae.position == "blocks.6.hook_resid_pre" and cfg.data.n_ctx == 1024
    assert cfg.sae.dict_size_to_input_ratio == 60 and cfg.train.batch_size == 8 and cfg.mode == "e2e"


def test_bench_errors_are_one_line_naming_the_option(tmp_path, tiny_config, capsys):
    path = write_config(tmp_path, tiny_config("e2e"))
    assert main([path, "--reference", str(tmp_path / "nowhere")]) == 2
    assert "--setup-reference" in capsys.readouterr().err
    assert main([path, "--compare-bf16"]) == 2
    assert "--compare-bf16" in capsys.readouterr().err
    assert main([path, "--model", "gpt5"]) == 2
    assert "--model" in capsys.readouterr().err
    assert main([path, "--set", f"sae.pretrained_path={tmp_path / 'missing.pt'}"]) == 2
    assert "sae.pretrained_path" in capsys.readouterr().err


@pytest.mark.slow
def test_pack_runs_concurrent_benchmark_processes(tmp_path, tiny_config):
    result = run_bench(tmp_path, tiny_config("local"), "--pack", "1")
    (row,) = result["pack"]
    assert row["n_trials"] == 1 and row["makespan_s"] > 0 and row["tokens_per_s_total"] > 0


@pytest.mark.skipif(
    not os.environ.get("E2E_SAE_REFERENCE_DIR"),
    reason="set E2E_SAE_REFERENCE_DIR to a dir prepared by --setup-reference",
)
@pytest.mark.parametrize("mode", ["e2e", "local", "e2e+ds"])
def test_reference_sees_the_same_weights_and_tokens(tmp_path, tiny_config, mode):
    out = tmp_path / "cmp.json"
    config = write_config(tmp_path, tiny_config(mode, train__warmup_samples=0))  # same LR at every step
    argv = [
        config,
        "--reference",
        os.environ["E2E_SAE_REFERENCE_DIR"],
        "--repeats",
        "1",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["equivalence"]["max_rel_diff"] <= 1.8e-7  # the README's bound
    assert result["ratios"][0] > 0 and result["reference_tokens_per_s_median"] > 0
    assert result["last_loss"]["ours"] == pytest.approx(result["last_loss"]["reference"], rel=1e-4)


def test_group_bench_times_group_and_separate_runs_alternating(tmp_path, tiny_config):
    r = run_bench(tmp_path, tiny_config("e2e"), "--group", "2", "--repeats", "2")
    assert r["group_size"] == 2 and set(r["tokens_per_s_summed"]) == {"separate", "group_loop", "group_stacked"}
    assert all(len(v) == 2 * 2 and min(v) > 0 for v in r["tokens_per_s_summed"].values())
    assert set(r["speedup_median"]) == {"group_loop", "group_stacked"} and r["peak_memory_mib"] > 0
    # On CPU each variant's own peak RSS (Linux), never above the whole process's
    per_variant = r["peak_memory_mib_per_variant"]
    assert r["peak_memory_kind_per_variant"] == "cpu_peak_rss" and set(per_variant) == set(r["tokens_per_s_summed"])
    assert all(0 < mib <= r["peak_memory_mib"] for mib in per_variant.values())
    local = run_bench(tmp_path, tiny_config("local"), "--group", "2", "--repeats", "1")
    assert set(local["tokens_per_s_summed"]) == {"separate", "group_loop"}  # no suffix to stack


def test_first_step_equivalence_fails_loudly_on_a_missing_or_non_finite_term():
    from e2e_sae.bench.reference import equivalence

    ours = {"terms": {"loss/sparsity": 0.5, "loss/logits_kl": 0.25}, "loss": 0.75, "grad_norm": 1.0}
    same = equivalence(ours, {"terms": dict(ours["terms"]), "loss": 0.75, "grad_norm": 1.0})
    assert same["max_rel_diff"] == 0.0 and same["identical_within_1e-4"]
    off = equivalence(ours, {"terms": {"loss/sparsity": 0.5, "loss/logits_kl": 0.5}, "loss": 1.0, "grad_norm": 1.0})
    assert off["max_rel_diff"] == pytest.approx(0.5) and not off["identical_within_1e-4"]
    with pytest.raises(ValueError, match="loss/logits_kl computed on one side only"):
        equivalence(ours, {"terms": {"loss/sparsity": 0.5}, "loss": 0.5, "grad_norm": 1.0})
    with pytest.raises(ValueError, match="loss/logits_kl computed on one side only"):
        equivalence({**ours, "terms": {"loss/sparsity": 0.5}}, {"terms": ours["terms"], "loss": 0.75, "grad_norm": 1.0})
    for bad in (float("nan"), float("inf")):
        theirs = {"terms": {"loss/sparsity": 0.5, "loss/logits_kl": bad}, "loss": 0.75, "grad_norm": 1.0}
        with pytest.raises(ValueError, match="loss/logits_kl is missing or not finite"):
            equivalence(ours, theirs)
    with pytest.raises(ValueError, match="grad_norm is missing or not finite"):
        equivalence(ours, {"terms": dict(ours["terms"]), "loss": 0.75, "grad_norm": None})
