"""What names an SAE (e2e_sae/sae_source.py): a sweep trial by ``EXPERIMENT/TRIAL``, a grouped trial's
member by its name though no such directory exists (the layout ``sweeps/running/grouped_trial.py``
and Tune write, checked here against them), a group's directory refused with its members listed; and
an unreadable SAE (a YAML file, an empty or truncated one, a directory without checkpoints) is one
line naming the option, exit 2, before the model loads, for export, ``evaluate --sae``,
``finetune.parent`` and ``sae.pretrained_path`` alike."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import tiny_run, write_tiny_data
from sweep_fixtures import tiny_sweep

from e2e_sae.config import ConfigError
from e2e_sae.evaluate import main as evaluate_main
from e2e_sae.export import main as export_main
from e2e_sae.run_dir import CHECKPOINT_FILE
from e2e_sae.sae_source import find_sae
from e2e_sae.train import main as train_main
from sweeps.planning.plan import Plan
from sweeps.planning.spec import sweep_from_dict
from sweeps.reporting.results import load_trials
from sweeps.running.grouped_trial import run_group

session_module = importlib.import_module("e2e_sae.session")
HOOK = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """An experiment of one grouped trial of two local members, persisted as Tune persists it: each
    reported group checkpoint copied to ``<group dir>/checkpoint_NNNNNN``; plus a plain trial."""
    tmp = tmp_path_factory.mktemp("sae_source")
    axes = {"mode": ["local"], "layer": [1], "sparsity_coeff": [0.1, 1.0]}
    config = Plan.from_spec(sweep_from_dict(tiny_sweep(tmp, axes=axes, group_size=2))).tune_trials[0]
    exp = tmp / "results" / "tiny"
    group = exp / config["name"]
    persisted: list[Path] = []

    def tune_report(row, checkpoint_dir):  # stands in for tune.report: Tune persists each checkpoint
        if checkpoint_dir is not None:
            persisted.append(group / f"checkpoint_{len(persisted):06d}")
            shutil.copytree(checkpoint_dir, persisted[-1])

    run_group(config, tmp / "scratch", None, "t0", tune_report)
    (group / "params.json").write_text(json.dumps(config))
    plain = exp / "plain_trial"  # a trial of one SAE: its checkpoint directory itself, as Tune persists it
    shutil.copytree(persisted[-1] / config["member_names"][0], plain / "checkpoint_000000")
    return exp, group, config["member_names"]


@pytest.fixture
def run_config(tmp_path) -> Path:
    """A tiny relu run config file (the kind every command here is given)."""
    raw = tiny_run(write_tiny_data(tmp_path), "local", str(tmp_path / "run"))
    raw["wandb"] = {"mode": "disabled"}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_every_name_status_lists_finds_its_sae_and_a_trial_dir_its_newest_checkpoint(experiment):
    exp, group, names = experiment
    listed = [t.trial_id for t in load_trials(exp) if t.trial_id in names]
    assert sorted(listed) == sorted(names)  # what status and report print for the members
    newest = sorted(group.glob("checkpoint_*"))[-1]
    for name in names:
        assert find_sae(exp / name, "x") == newest / name
        assert (newest / name / "metrics.json").is_file()  # the member's final checkpoint
    assert find_sae(exp / "plain_trial", "x") == exp / "plain_trial" / "checkpoint_000000"


def test_export_takes_a_grouped_member_by_name(experiment, tmp_path, capsys):
    exp, _, names = experiment
    assert export_main([str(exp / names[1]), "--out", str(tmp_path / "one")]) == 0, capsys.readouterr().err
    cfg = json.loads((tmp_path / "one" / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == HOOK and cfg["metadata"]["e2e_sae"]["sparsity_coeff"] == 1.0


@pytest.mark.parametrize("where", ["group", "checkpoint"])
def test_a_group_directory_is_refused_with_its_members_listed(experiment, tmp_path, capsys, where):
    exp, group, names = experiment
    given = group if where == "group" else sorted(group.glob("checkpoint_*"))[-1]
    assert export_main([str(given), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "grouped sweep trial of 2 SAEs" in err, err
    at = exp if where == "group" else given
    assert all(str(at / n) in err for n in names) and not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="^sae.pretrained_path: .* grouped sweep trial"):
        find_sae(group, "sae.pretrained_path")


def test_evaluate_finetune_and_pretrained_path_take_a_member_by_name(experiment, run_config, tmp_path, capsys):
    exp, _, names = experiment
    member = str(exp / names[0])
    assert evaluate_main([str(run_config), "--sae", member, "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["l0"] > 0
    fine = ["--set", f"finetune.parent={member}", "--set", "train.n_samples=32", "--set", "mode=e2e"]
    assert train_main([str(run_config), "--no-progress", *fine, "--set", f"output_dir={tmp_path / 'ft'}"]) == 0
    pre = ["--set", f"sae.pretrained_path={member}", "--set", "train.n_samples=32"]
    assert train_main([str(run_config), "--no-progress", *pre, "--set", f"output_dir={tmp_path / 'pre'}"]) == 0
    assert "error" not in capsys.readouterr().err


def _unreadable(kind: str, experiment, tmp: Path) -> Path:
    exp, group, names = experiment
    tmp.mkdir()
    if kind == "yaml":
        (tmp / "config.yaml").write_text("mode: local\noutput_dir: runs/x\n")
        return tmp / "config.yaml"
    if kind == "empty":
        (tmp / "empty.pt").write_bytes(b"")
        return tmp / "empty.pt"
    if kind == "truncated":
        final = sorted(group.glob("checkpoint_*"))[-1] / names[0]  # its final metrics, its checkpoint cut short
        shutil.copytree(final, tmp / "cut")
        whole = (final / CHECKPOINT_FILE).read_bytes()
        (tmp / "cut" / CHECKPOINT_FILE).write_bytes(whole[: len(whole) // 2])
        return tmp / "cut"
    (tmp / "nothing" / "checkpoints").mkdir(parents=True)  # a run directory without checkpoints
    return tmp / "nothing"


@pytest.mark.parametrize("kind", ["yaml", "empty", "truncated", "no_checkpoints"])
@pytest.mark.parametrize("option", ["finetune.parent", "sae.pretrained_path", "--sae", "RUN_OR_CHECKPOINT"])
def test_an_unreadable_sae_is_one_line_naming_the_option_before_the_model_loads(
    experiment, run_config, tmp_path, monkeypatch, capsys, kind, option
):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(session_module, "load_checked_model", no_model)
    monkeypatch.setattr(importlib.import_module("e2e_sae.evaluate"), "load_checked_model", no_model)
    bad = _unreadable(kind, experiment, tmp_path / "bad")
    out = tmp_path / "out"
    if option == "--sae":
        rc = evaluate_main([str(run_config), "--sae", str(bad), "--out", str(out)])
    elif option == "RUN_OR_CHECKPOINT":
        rc = export_main([str(bad), "--out", str(out)])
    else:
        sets = ["--set", f"{option}={bad}", "--set", f"output_dir={out}", "--set", "train.n_samples=32"]
        rc = train_main([str(run_config), "--no-progress", *sets])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {option}: ") and err.count("\n") == 1, err
    assert not out.exists()


def test_the_authors_file_of_several_saes_is_still_picked_by_position(tmp_path):
    """Reading what a checkpoint says (its hook, its config) leaves the position the caller asks for alone."""
    import torch

    from e2e_sae.sae import read_sae_file

    names = ("encoder.0.weight", "encoder.0.bias", "decoder.weight", "decoder.bias")
    one, other = {k: torch.ones(2, 2) for k in names}, {k: torch.zeros(2, 2) for k in names}
    theirs = {**{f"blocks-1-hook_resid_pre.{k}": v for k, v in one.items()}}
    theirs |= {f"blocks-0-hook_resid_pre.{k}": v for k, v in other.items()}
    torch.save(theirs, tmp_path / "theirs.pt")
    picked = read_sae_file(find_sae(tmp_path / "theirs.pt", "--sae"), HOOK)
    assert all(torch.equal(picked.state[k], one[k]) for k in names) and picked.weight_processing == "hooked_transformer"


def test_a_member_of_a_retried_group_is_the_attempt_that_finished(experiment, tmp_path):
    exp, group, names = experiment
    copy = tmp_path / "exp"
    shutil.copytree(group, copy / "first_attempt")
    shutil.copytree(group, copy / "retried")
    newest = sorted((copy / "first_attempt").glob("checkpoint_*"))[-1]
    (newest / names[0] / "metrics.json").unlink()  # the first attempt died before its end
    assert find_sae(copy / names[0], "x") == sorted((copy / "retried").glob("checkpoint_*"))[-1] / names[0]
    with pytest.raises(ConfigError, match=f"^x: {names[1]} was trained in 2 grouped trials of {copy}; pass one"):
        find_sae(copy / names[1], "x")
