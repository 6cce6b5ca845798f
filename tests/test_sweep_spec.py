"""Sweep files: expansion, the plan command, and bad files failing in one line before Ray starts."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_fixtures import tiny_sweep, write_sweep

from e2e_sae.config import ConfigError
from sweeps.experiment import check_storage, storage_uri
from sweeps.planning.plan import Plan
from sweeps.planning.spec import LogSpace, expand_trials, sweep_from_dict


def test_axes_expand_per_mode_coefficients(tmp_path):
    spec = sweep_from_dict(
        tiny_sweep(
            tmp_path,
            axes={
                "mode": ["local", "e2e", "e2e+ds"],
                "layer": [0, 1],
                "dict_size_to_input_ratio": [2, 4],
                "sparsity_coeff": {"local": {"log_space": [0.5, 20], "num": 3}, "e2e": [0.1], "e2e+ds": [1, 2]},
                "seed": [0, 1],
            },
        )
    )
    trials = expand_trials(spec)
    assert len(trials) == (3 + 1 + 2) * 2 * 2 * 2
    local = sorted({t.sparsity_coeff for t in trials if t.mode == "local"})
    assert local == pytest.approx([0.5, 3.16228, 20.0])
    t = trials[0]
    assert t.run["mode"] == "local" and t.run["sae"]["position"] == "blocks.0.hook_resid_pre"
    assert t.run["train"]["checkpoint_every_n_samples"] == 32 and t.run["loss"]["sparsity"]["coeff"] == 0.5
    Plan.from_spec(spec)  # every run config valid


def test_overrides_apply_to_every_trial(tmp_path):
    spec = sweep_from_dict(tiny_sweep(tmp_path, overrides={"train.n_samples": 32, "train": {"lr": 0.5}}))
    assert {t.run["train"]["n_samples"] for t in expand_trials(spec)} == {32}
    assert {t.run["train"]["lr"] for t in expand_trials(spec)} == {0.5}


def test_log_space_values():
    assert LogSpace(log_space=(1, 100), num=3).values() == [1.0, 10.0, 100.0]


BAD = [
    ({"axes": {"mode": ["e2e"], "sparsity_coeff": [1.0], "heads": [1]}}, "axes.heads: unknown key"),
    ({"axes": {"mode": [], "sparsity_coeff": [1.0]}}, "axes.mode"),
    ({"axes": {"mode": ["e2e", "global"], "sparsity_coeff": [1.0]}}, "axes.mode.1"),
    ({"axes": {"mode": ["e2e"], "layer": [9], "sparsity_coeff": [1.0]}}, "axes.layer: layer 9 is out of range"),
    ({"axes": {"mode": ["e2e", "local"], "sparsity_coeff": {"e2e": [1.0]}}}, "no coefficients for mode(s) ['local']"),
    ({"resources_per_trial": {"cpu": 1, "gpu": 1.5}}, "resources_per_trial.gpu"),
    ({"storage_path": "/proc/no-such-dir/results"}, "storage_path:"),
    ({"overrides": {"train.batch_size": 3}}, "train.effective_batch_size (8) must be a multiple"),
]


@pytest.mark.parametrize("top,message", BAD)
def test_bad_sweep_file_fails_in_one_line(tmp_path, top, message):
    with pytest.raises(ConfigError) as err:
        spec = sweep_from_dict(tiny_sweep(tmp_path, **top))
        Plan.from_spec(spec)
        check_storage(spec.storage_path)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_cli_plan_prints_trials_and_bad_file_exits_before_ray(tmp_path):
    path = write_sweep(tmp_path, tiny_sweep(tmp_path))
    plan = subprocess.run([sys.executable, "-m", "sweeps", "plan", str(path)], capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    assert "3 trials" in plan.stdout and "loss.sparsity.coeff=1.0" in plan.stdout
    bad = write_sweep(tmp_path, tiny_sweep(tmp_path, resources_per_trial={"gpu": 2}), "bad.yaml")
    run = subprocess.run([sys.executable, "-m", "sweeps", "run", str(bad)], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.startswith("error: resources_per_trial.gpu")
    assert not (tmp_path / "results").exists()  # nothing written, Ray never started


def test_remote_experiment_copies_only_report_inputs(tmp_path, monkeypatch):
    from sweeps import experiment as layout

    exp = tmp_path / "remote" / "exp"
    (exp / "trial_0" / "checkpoint_000001").mkdir(parents=True)
    for rel in [
        "sweep.yaml",
        "experiment_state-1.json",
        "trial_0/params.json",
        "trial_0/result.json",
        "trial_0/checkpoint_000001/checkpoint.pt",
        "trial_0/checkpoint_000001/metrics.json",  # the trial's final metrics: the report may need them
        "tuner.pkl",
    ]:
        (exp / rel).write_text("x")
    monkeypatch.setattr(layout, "is_remote", lambda uri: True)  # a file:// URI through the pyarrow code path
    local = Path(layout.local_copy(f"file://{exp}"))
    copied = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    assert copied == [
        "experiment_state-1.json",
        "sweep.yaml",
        "trial_0/checkpoint_000001/metrics.json",
        "trial_0/params.json",
        "trial_0/result.json",
    ]


def test_missing_dataset_in_the_base_fails_validation_in_one_line(tmp_path):
    top = tiny_sweep(tmp_path)
    run = top.pop("run")
    run["data"]["train"]["name"] = str(tmp_path / "no-such-train.jsonl")
    top["base"] = str(write_sweep(tmp_path, run, "base.yaml"))
    spec = sweep_from_dict(top)
    with pytest.raises(ConfigError) as err:
        Plan.from_spec(spec)
    message = str(err.value)
    assert message.startswith(f"trial {expand_trials(spec)[0].name}: data.train")
    assert "no-such-train.jsonl does not exist" in message and "\n" not in message


def test_file_uri_storage_is_one_directory_for_tune_sweep_file_and_resume(tmp_path, monkeypatch):
    from sweeps import experiment as layout
    from sweeps.running.tuner import run_config

    monkeypatch.setenv("HOME", str(tmp_path))
    for storage in (f"file://{tmp_path}/results", "~/results", str(tmp_path / "results")):
        spec = sweep_from_dict(tiny_sweep(tmp_path, storage_path=storage))
        exp = str(tmp_path / "results" / "tiny")
        assert storage_uri(storage) == str(tmp_path / "results")
        assert spec.experiment_path == exp  # where sweep.yaml is written and the report read
        tune_config = run_config(spec)  # builds Tune's RunConfig; starts no Ray
        assert str(Path(tune_config.storage_path) / tune_config.name) == exp
        assert layout.filesystem(f"file://{exp}")[1] == exp == storage_uri(f"file://{exp}")  # resume's path
        check_storage(storage)
    assert storage_uri("s3://bucket/results/") == "s3://bucket/results/"


def test_trial_names_are_unique_and_safe_as_file_names(tmp_path):
    spec = sweep_from_dict(
        tiny_sweep(
            tmp_path,
            axes={
                "mode": ["e2e", "e2e+ds"],
                "layer": [1],
                "sparsity_coeff": [0.5, 1.00001, 1.00002, 2],
            },
        )
    )
    names = Plan.from_spec(spec).names
    assert names[:2] == ["e2e_L1_r2_s0.5_seed0", "e2e_L1_r2_s1_seed0_1"]  # 1.00001 and 1.00002 coincide at 4 digits
    assert names[2] == "e2e_L1_r2_s1_seed0_2" and names[4] == "e2e+ds_L1_r2_s0.5_seed0"
    assert len(set(names)) == len(names) == 8
    assert all(re.fullmatch(r"[A-Za-z0-9_.+-]+", n) for n in names)
    hooked = expand_trials(sweep_from_dict(tiny_sweep(tmp_path, axes={"mode": ["local"], "sparsity_coeff": [1]})))
    assert hooked[0].name == "local_L1_r2_s1_seed0"  # no layer axis: the base's hook, a resid_pre one
    base = tiny_sweep(tmp_path, axes={"mode": ["local"], "sparsity_coeff": [1]})
    base["run"]["sae"]["position"] = "blocks.1.hook_resid_mid"
    assert expand_trials(sweep_from_dict(base))[0].name == "local_Lblocks.1.hook_resid_mid_r2_s1_seed0"


def test_an_experiment_saved_before_the_checkpoints_per_trial_rename_still_loads(tmp_path):
    raw = tiny_sweep(tmp_path, keep_checkpoints=5)
    assert sweep_from_dict(raw).checkpoints_per_trial == 5


def test_a_run_config_key_set_on_a_sweep_file_names_the_overrides_form(tmp_path):
    raw = tiny_sweep(tmp_path)
    with pytest.raises(ConfigError) as err:
        sweep_from_dict(raw, {"train.n_samples": 600})
    assert str(err.value) == (
        "--set train.n_samples=600: train is a run-config field, not a sweep-file one; "
        "set it for every trial with --set overrides.train.n_samples=600"
    )
    spec = sweep_from_dict(raw, {"overrides.train.n_samples": 600})  # the form it names works
    assert {t.run["train"]["n_samples"] for t in expand_trials(spec)} == {600}
    with pytest.raises(ConfigError, match=r"^train: a run-config field, not a sweep-file one; .* under overrides:"):
        sweep_from_dict({**raw, "train": {"n_samples": 600}})  # written at the top of the sweep file
    with pytest.raises(ConfigError, match="^--set wandb.name=x: wandb.name is a run-config field"):
        sweep_from_dict(raw, {"wandb.name": "x"})  # the sweep has a wandb section of its own, without name
    with pytest.raises(ConfigError, match="^trian: unknown key"):
        sweep_from_dict(raw, {"trian.n_samples": 600})  # a typo is no run-config field


def test_piping_a_command_into_head_is_quiet(tmp_path):
    """No BrokenPipeError traceback when the reader of stdout goes away: the shell's SIGPIPE status."""
    exp = tmp_path / "big"
    for i in range(800):  # a status table larger than a pipe's buffer
        d = exp / f"local_L1_r2_s{i}_seed0"
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps({"mode": "local", "layer": 1, "sparsity_coeff": i, "seed": 0}))
        (d / "result.json").write_text('{"l0": 10.0, "ce_loss_increase": 0.1, "final": true}\n')
    lots = "from e2e_sae.cli_exit import exit_with; exit_with(lambda: [print(i) for i in range(10**6)] and 0)"
    for command in (f"{sys.executable} -m sweeps status {exp}", f"{sys.executable} -c '{lots}'"):
        proc = subprocess.run(
            ["bash", "-c", f"{command} | head -1; exit ${{PIPESTATUS[0]}}"], capture_output=True, text=True
        )
        assert proc.stderr == "" and proc.returncode == 141 and len(proc.stdout.splitlines()) == 1
