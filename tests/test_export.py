"""Export to the SAELens format and import from it, without sae-lens (tests/test_saelens_format.py runs
sae-lens itself): ``python -m e2e_sae.export`` on a finished run, its refusals (one line, exit 2,
nothing written), ``python -m sweeps export`` on a tiny finished experiment, an exported SAE scored by
``python -m e2e_sae.evaluate`` as its run scored it, and SAELens directories we cannot reproduce."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from analysis_fixtures import build_tiny_experiment, tiny_run
from safetensors.torch import save_file
from sweep_fixtures import trial_record

from e2e_sae.checkpoint import latest_checkpoint
from e2e_sae.config import run_config_from_dict
from e2e_sae.dictionary import load_trained_sae
from e2e_sae.evaluate import main as evaluate_main
from e2e_sae.export import main as export_main
from e2e_sae.run_dir import CHECKPOINT_FILE, METRICS_FILE, RunDir
from e2e_sae.sae import read_sae_file, sae_from_file
from e2e_sae.train import train
from sweeps.cli import main as sweeps_main
from sweeps.reporting.release import frontier_membership
from sweeps.reporting.results import load_trials, read_sweep_meta

TRIAL = "local_L1_r2_s0.5_seed0"
HOOK = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return build_tiny_experiment(tmp_path_factory.mktemp("export"))


def checkpoint_of(experiment: Path, trial: str = TRIAL) -> Path:
    return experiment / trial / "checkpoint_000000"


def test_exported_sae_imports_back_as_the_same_sae(experiment, tmp_path, capsys):
    out = tmp_path / "sae"
    assert export_main([str(checkpoint_of(experiment)), "--format", "saelens", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("standard SAE, d_in=128 d_sae=256, blocks.1.hook_resid_pre")
    cfg = json.loads((out / "cfg.json").read_text())
    assert (
        cfg["metadata"]["e2e_sae"]["final_metrics"]["l0"]
        == json.loads((checkpoint_of(experiment) / METRICS_FILE).read_text())["l0"]
    )
    trained = load_trained_sae(checkpoint_of(experiment)).sae
    imported = sae_from_file(read_sae_file(out, HOOK)).eval()
    x = 20 * torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (ours_hat, ours_c), (back_hat, back_c) = trained(x), imported(x)
    assert 0 < int((ours_c != 0).sum()) < ours_c.numel()
    torch.testing.assert_close(back_c, ours_c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(back_hat, ours_hat, rtol=1e-5, atol=1e-5)


def _unfinished_run(experiment: Path, tmp: Path) -> Path:
    """A run directory with a checkpoint but no final metrics (stopped before its end)."""
    run = RunDir(tmp / "run")
    ckpt = run.checkpoint(48)
    ckpt.mkdir(parents=True)
    shutil.copy(checkpoint_of(experiment) / CHECKPOINT_FILE, ckpt / CHECKPOINT_FILE)
    run.config.write_text("{}\n")
    return run.root


def _middle_checkpoint(experiment: Path, tmp: Path) -> Path:
    """A checkpoint directory without the final metrics (not a run's last)."""
    ckpt = tmp / "ckpt"
    ckpt.mkdir()
    shutil.copy(checkpoint_of(experiment) / CHECKPOINT_FILE, ckpt / CHECKPOINT_FILE)
    return ckpt


def _foreign_architecture(experiment: Path, tmp: Path) -> Path:
    """A final checkpoint whose config names an architecture SAELens has no counterpart of."""
    ckpt = tmp / "gated"
    shutil.copytree(checkpoint_of(experiment), ckpt)
    blob = torch.load(ckpt / CHECKPOINT_FILE, weights_only=True)
    blob["config"]["sae"]["architecture"] = "gated"
    torch.save(blob, ckpt / CHECKPOINT_FILE)
    return ckpt


@pytest.mark.parametrize(
    "make, message",
    [
        (_unfinished_run, "an unfinished run"),
        (_middle_checkpoint, "not a finished run's final checkpoint"),
        (_foreign_architecture, "sae.architecture gated has no SAELens counterpart"),
        (lambda e, t: t / "missing", "does not exist"),
    ],
)
def test_bad_export_input_is_one_line_and_exit_2_and_writes_nothing(experiment, tmp_path, capsys, make, message):
    source = make(experiment, tmp_path)
    out = tmp_path / "out"
    assert export_main([str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_export_never_overwrites_a_non_empty_out(experiment, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export_main([str(checkpoint_of(experiment)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists and is not an empty directory" in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("command", ["e2e_sae.export", "sweeps export", "sweeps analyse", "sweeps report"])
def test_an_out_under_a_file_is_one_line_and_exit_2_before_anything_is_written(experiment, tmp_path, capsys, command):
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "sae"
    if command == "e2e_sae.export":
        assert export_main([str(checkpoint_of(experiment)), "--out", str(out)]) == 2
    else:
        assert sweeps_main([command.split()[1], str(experiment), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"--out: {out} lies under {tmp_path / 'notes.txt'}, which is a file; choose a path in a directory" in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"


def test_a_report_out_that_is_a_file_is_one_line_and_exit_2(experiment, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert sweeps_main(["report", str(experiment), "--out", str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out: {tmp_path / 'notes.txt'} is a file; choose a path in a directory" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_sweep_export_writes_one_saelens_directory_per_trial_and_a_manifest(experiment, tmp_path, capsys):
    out = tmp_path / "release"
    assert sweeps_main(["export", str(experiment), "--out", str(out)]) == 0
    assert "huggingface-cli upload USER/REPO" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    trials = load_trials(experiment)
    assert sorted(e["sae_id"] for e in manifest["saes"]) == sorted(t.trial_id for t in trials)
    membership = frontier_membership(trials, read_sweep_meta(experiment, trials))
    by_id = {t.trial_id: t for t in trials}
    for e in manifest["saes"]:
        assert sorted(p.name for p in (out / e["sae_id"]).iterdir()) == ["cfg.json", "sae_weights.safetensors"]
        t = by_id[e["trial"]]
        assert (e["mode"], e["architecture"], e["hook"], e["sparsity_coeff"]) == (t.mode, "relu", HOOK, 0.5)
        assert e["l0"] == t.metrics["l0"] and e["ce_loss_increase"] == t.metrics["ce_loss_increase"]
        assert e["frontiers"] == sorted(membership.get(e["trial"], []))
    assert any(e["frontiers"] for e in manifest["saes"])
    assert (out / "README.md").read_text().startswith("---\nlibrary_name: saelens\n---")
    frontier_out = tmp_path / "frontier"
    assert sweeps_main(["export", str(experiment), "--frontier", "--out", str(frontier_out)]) == 0
    kept = json.loads((frontier_out / "manifest.json").read_text())["saes"]
    assert sorted(e["sae_id"] for e in kept) == sorted(membership)
    assert sweeps_main(["export", str(experiment), "--out", str(out)]) == 2  # never over an existing release


@pytest.fixture(scope="module")
def finetuned(experiment, tmp_path_factory):
    """A copy of the tiny experiment with one fine-tune trial, laid out as a sweep's fine-tune stage
    leaves it: the local trial's SAE trained on with e2e losses for 24 of its 48 samples (the length
    set as a stage sets it, without finetune.fraction). Returns (experiment, the child's run dir)."""
    root = tmp_path_factory.mktemp("finetuned")
    exp = root / "tiny"
    shutil.copytree(experiment, exp)
    run = tiny_run(experiment.parent / "eval.jsonl", "e2e", 0, 0.5)
    run["finetune"] = {"parent": str(experiment.parent / "scratch" / TRIAL)}  # the local trial's run
    run["train"] |= {"n_samples": 24, "checkpoint_every_n_samples": 24}
    child_dir = root / "child"
    final = train(run_config_from_dict(run, {"output_dir": str(child_dir)}), progress=False)
    stage = {"stage": "kl", "parent": TRIAL, "parent_trial": TRIAL, "member": None, "parent_mode": "local"}
    trial = trial_record("e2e", 0.5, run=run, finetune={**stage, "fraction": 0.5})
    (exp / trial.name).mkdir()
    (exp / trial.name / "params.json").write_text(json.dumps(trial.tune_config()))
    (exp / trial.name / "result.json").write_text(json.dumps({**final, "training_iteration": 1}) + "\n")
    shutil.copytree(sorted((child_dir / "checkpoints").glob("samples_*"))[-1], exp / trial.name / "checkpoint_000000")
    return exp, child_dir


FINETUNE_WORDS = "local SAE (48 samples) fine-tuned with e2e losses for 24 samples (50%)"


def test_an_exported_finetune_carries_its_lineage_not_just_its_own_mode_and_samples(
    experiment, finetuned, tmp_path, capsys
):
    exp, child_dir = finetuned
    out = tmp_path / "sae"
    assert export_main([str(child_dir), "--out", str(out)]) == 0
    assert f"trained: {FINETUNE_WORDS}" in capsys.readouterr().out
    ours = json.loads((out / "cfg.json").read_text())["metadata"]["e2e_sae"]
    assert (ours["mode"], ours["n_samples"], ours["total_n_samples"]) == ("e2e", 24, 72)
    lineage = {k: v for k, v in ours["finetune"].items() if k != "parent"}
    assert lineage == {
        "parent_mode": "local",
        "parent_n_samples": 48,
        "mode": "e2e",
        "n_samples": 24,
        "fraction": 0.5,
        "total_n_samples": 72,
    }
    assert ours["finetune"]["parent"] == str(latest_checkpoint(experiment.parent / "scratch" / TRIAL))

    release = tmp_path / "release"
    assert sweeps_main(["export", str(exp), "--out", str(release)]) == 0
    entries = {e["trial"]: e for e in json.loads((release / "manifest.json").read_text())["saes"]}
    child = entries[f"{TRIAL}_kl_e2e_50pct"]
    assert {k: v for k, v in child["finetune"].items() if k != "parent"} == {**lineage, "parent_trial": TRIAL}
    assert (child["mode"], child["n_samples"], child["total_n_samples"]) == ("e2e", 24, 72)
    assert child["trained"] == FINETUNE_WORDS
    assert entries[TRIAL]["finetune"] is None and entries[TRIAL]["trained"] == "local, 48 samples"
    card = (release / "README.md").read_text()
    assert f"| `{child['sae_id']}` | {FINETUNE_WORDS} | relu |" in card
    assert f"| `{TRIAL}` | local, 48 samples | relu |" in card


def test_evaluate_scores_an_exported_sae_as_its_run_did(experiment, tmp_path, capsys):
    out = tmp_path / "sae"
    assert export_main([str(checkpoint_of(experiment)), "--out", str(out)]) == 0
    blob = torch.load(checkpoint_of(experiment) / CHECKPOINT_FILE, weights_only=True)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(blob["config"]))
    assert evaluate_main([str(config), "--sae", str(out), "--out", str(tmp_path / "eval")]) == 0
    scored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    final = json.loads((checkpoint_of(experiment) / METRICS_FILE).read_text())
    for key in ("l0", "ce_loss_increase", "kl", "explained_variance"):
        assert scored[key] == pytest.approx(final[key], rel=1e-4, abs=1e-6), key


def write_saelens_dir(path: Path, cfg: dict, d_in: int = 128, d_sae: int = 256) -> Path:
    path.mkdir()
    g = torch.Generator().manual_seed(0)
    weights = {
        "W_enc": torch.randn(d_in, d_sae, generator=g),
        "b_enc": torch.zeros(d_sae),
        "W_dec": torch.randn(d_sae, d_in, generator=g),
        "b_dec": torch.zeros(d_in),
    }
    save_file(weights, str(path / "sae_weights.safetensors"))
    meta = {"hook_name": HOOK, "model_name": "builtin:pycode", "model_from_pretrained_kwargs": {}}
    base = {"architecture": "standard", "d_in": d_in, "d_sae": d_sae, "dtype": "float32"}
    (path / "cfg.json").write_text(json.dumps({**base, **cfg, "metadata": {**meta, **cfg.get("metadata", {})}}))
    return path


@pytest.mark.parametrize(
    "cfg, message",
    [
        (None, "holds no SAE checkpoint; pass a run's output_dir, a checkpoint directory or file, a sweep trial"),
        ({"architecture": "gated"}, "architecture gated has no counterpart here"),
        ({"normalize_activations": "layer_norm"}, "normalize_activations layer_norm is not folded"),
        ({"architecture": "topk", "k": 4}, "topk with rescale_acts_by_decoder_norm false and decoder rows of norm"),
        ({"metadata": {"model_from_pretrained_kwargs": {"fold_ln": True}}}, "processes the model's weights partly"),
        ({"metadata": {"hook_name": "blocks.0.hook_resid_pre"}}, "the SAE reads blocks.0.hook_resid_pre"),
        ({"architecture": "standard", "d_in": 64, "d_sae": 128}, "the SAE reads d_in=64"),
    ],
)
def test_saelens_sae_we_cannot_reproduce_is_refused_in_one_line(experiment, tmp_path, capsys, cfg, message):
    blob = torch.load(checkpoint_of(experiment) / CHECKPOINT_FILE, weights_only=True)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(blob["config"]))
    sae_dir = tmp_path / "sae"
    if cfg is None:
        sae_dir.mkdir()
    else:
        d_in, d_sae = cfg.get("d_in", 128), cfg.get("d_sae", 256)
        write_saelens_dir(sae_dir, cfg, d_in, d_sae)
    position = ["--position", HOOK] if cfg and "hook_name" in cfg.get("metadata", {}) else []
    assert evaluate_main([str(config), "--sae", str(sae_dir), "--out", str(tmp_path / "eval"), *position]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "eval").exists()
