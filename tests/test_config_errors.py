"""Bad configs fail before any compute with one line naming the field, and touch nothing on disk."""

import importlib
from pathlib import Path

import pytest
import yaml

from e2e_sae import ConfigError, run_config_from_dict
from e2e_sae.train import main
from e2e_sae.validate import preflight

session_module = importlib.import_module("e2e_sae.session")

CASES = [
    ({"sae.bogus": 1}, "sae.bogus: unknown key"),
    ({"loss.sparsity.coeff": -1.0}, "loss.sparsity.coeff: got -1; give a value >= 0"),
    ({"sae.dict_size_to_input_ratio": 0}, "sae.dict_size_to_input_ratio"),
    ({"sae.position": "blocks.7.hook_resid_pre"}, "sae.position: layer 7 is out of range"),
    ({"sae.position": "blocks.1.hook_resid_pree"}, "sae.position: unknown hook point"),
    ({"data.n_ctx": 32}, "data.n_ctx: 32 exceeds the model's context 16"),
    ({"train.batch_size": 3}, "train.effective_batch_size (8) must be a multiple of train.batch_size (3)"),
    (
        {"data.train.name": "/nonexistent/train.jsonl"},
        "data.train.name: dataset path /nonexistent/train.jsonl does not exist",
    ),
    ({"mode": "e2e-ds"}, "mode:"),
    ({"output_dir": "EXISTING_RUN"}, "output_dir:"),
]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and mtime: what a refused config must leave as it was."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("overrides,message", CASES)
def test_bad_config_exits_2_with_one_line_before_the_model_loads_and_touches_nothing(
    tiny_config, tmp_path, monkeypatch, capsys, overrides, message
):
    """The README's promise, through the CLI for every case: exit status 2, one line naming the field,
    raised before the model is loaded, and no file written, moved or created."""
    existing = tmp_path / "existing_run"
    (existing / "checkpoints").mkdir(parents=True)
    (existing / "metrics.json").write_text('{"l0": 1.0}')
    overrides = {k: (str(existing) if v == "EXISTING_RUN" else v) for k, v in overrides.items()}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the config error was raised")

    monkeypatch.setattr(session_module, "load_checked_model", no_model)  # where every run loads its model
    before = tree(tmp_path)
    sets = [x for k, v in overrides.items() for x in ("--set", f"{k}={yaml.safe_dump(v).strip()}")]
    rc = main([str(path), "--no-progress", *sets])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and message in err
    assert tree(tmp_path) == before
    assert not (tmp_path / "run_e2e").exists()


def test_bad_config_is_one_line_naming_the_field_from_python_too(tiny_config):
    for overrides, message in CASES[:-1]:
        with pytest.raises(ConfigError) as err:
            cfg = run_config_from_dict(tiny_config(), overrides)
            preflight(cfg, resume=False)
        assert message in str(err.value) and "\n" not in str(err.value)


def test_resume_without_a_checkpoint_is_one_line(tiny_config, tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    assert main([str(path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: no checkpoint in") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run_e2e").exists()


def test_mode_presets_fill_loss_terms_and_stay_overridable(tiny_config):
    local = run_config_from_dict(tiny_config("local"))
    assert local.loss.out_to_in.coeff == 1.0 and local.loss.logits_kl is None and not local.loss.needs_logits
    ds = run_config_from_dict(tiny_config("e2e+ds"))
    assert ds.loss.logits_kl.coeff == 0.5 and ds.loss.in_to_orig.total_coeff == 2.5
    custom = run_config_from_dict(tiny_config("e2e+ds"), {"loss.logits_kl.coeff": 2.0})
    assert custom.loss.logits_kl.coeff == 2.0 and custom.loss.in_to_orig.total_coeff == 2.5


UNCLOSED = "  mode: [local, e2e\n"  # a flow list with no closing bracket


def _one_line_yaml_error(rc: int, stderr: str, path, line: int, column: int) -> None:
    assert rc == 2, stderr[-2000:]
    err = stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"error: {path}:{line}:{column}: invalid YAML")
    assert "expected ','" in err and "while parsing a flow" in err


def test_yaml_syntax_errors_are_one_line_with_file_line_and_column(tiny_config, tmp_path, capsys):
    """Both CLIs, in process (their main() is what `python -m` runs): exit status 2 and one line."""
    from e2e_sae.train import main as train_main
    from sweeps.cli import main as sweeps_main

    # the run config, through the training CLI
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(tiny_config()) + "loss:\n  sparsity: {coeff: 1.0\n")
    n_lines = len(run_file.read_text().splitlines())
    rc = train_main([str(run_file)])
    _one_line_yaml_error(rc, capsys.readouterr().err, run_file, n_lines + 1, 1)
    assert not (tmp_path / "run_e2e").exists()

    # the sweep file, through `sweeps plan` and `sweeps run` (which would start Ray after it)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"name: broken\nstorage_path: {tmp_path / 'res'}\nbase: run.yaml\naxes:\n" + UNCLOSED)
    for command in ("plan", "run"):
        rc = sweeps_main([command, str(sweep_file)])
        _one_line_yaml_error(rc, capsys.readouterr().err, sweep_file, 6, 1)
    assert not (tmp_path / "res").exists()

    # the base run config a (valid) sweep file names
    good = tmp_path / "good_sweep.yaml"
    good.write_text(f"name: ok\nbase: {run_file}\naxes: {{mode: [e2e], sparsity_coeff: [1.0]}}\n")
    rc = sweeps_main(["plan", str(good)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: base: {run_file}:{n_lines + 1}:1: invalid YAML")
    assert len(err.strip().splitlines()) == 1

    # a --set value that is not YAML
    rc = sweeps_main(["plan", str(good), "--set", "axes.seed=[0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --set 'axes.seed=[0': the value is not valid YAML")


def test_python_refuses_a_used_output_dir_naming_resume_from_which_continues_it(tiny_config):
    """From Python the refusal names the API's own argument (not the CLI's --resume), and that argument
    takes the run's output_dir as --resume does: the run continues from its newest checkpoint."""
    from e2e_sae.train import train

    cfg = run_config_from_dict(tiny_config())
    final = train(cfg, progress=False)
    with pytest.raises(ConfigError) as err:
        train(cfg, progress=False)
    assert str(err.value) == (
        f"output_dir: {cfg.output_dir} already holds files; pass resume_from={str(cfg.output_dir)!r} to continue "
        "that run or choose a new output_dir (nothing was written)"
    )
    assert train(cfg, resume_from=cfg.output_dir, progress=False) == final
