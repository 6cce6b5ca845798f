"""Training runs: each mode lowers its loss, resume is exact, outputs are where the README says."""

import importlib
import json

import pytest
import torch

from e2e_sae import run_config_from_dict
from e2e_sae.checkpoint import latest_checkpoint, load_checkpoint
from e2e_sae.optim import lr_factor
from e2e_sae.train import main, train


class Interrupt(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["local", "e2e", "e2e+ds"])
def test_each_mode_trains_and_lowers_its_loss(tiny_config, mode):
    cfg = run_config_from_dict(tiny_config(mode, **{"train.n_samples": 160, "train.eval_every_n_samples": None}))
    metrics = train(cfg, progress=False)
    rows = [json.loads(line) for line in (cfg.output_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert losses[-1] < losses[0]
    for key in [
        "l0",
        "alive_dict_elements",
        "ce_loss_increase",
        "ce_loss_original",
        "ce_loss_spliced",
        "kl",
        "explained_variance",
        "mse",
        "ce_loss_score",
        "eval_tokens",
        "n_ctx",
    ]:
        assert key in metrics
    assert json.loads((cfg.output_dir / "metrics.json").read_text()) == metrics
    assert (cfg.output_dir / "config.yaml").is_file() and latest_checkpoint(cfg.output_dir) is not None


@pytest.mark.slow
@pytest.mark.parametrize("n_samples", [64, 128])  # 128: the checkpoint falls on the data's epoch end
def test_resume_is_exact(tiny_config, tmp_path, n_samples):
    sizes = {"train.n_samples": n_samples, "train.checkpoint_every_n_samples": n_samples // 2}
    straight_cfg = run_config_from_dict(tiny_config("e2e+ds", output_dir=str(tmp_path / "straight"), **sizes))
    straight = train(straight_cfg, progress=False)

    cfg = run_config_from_dict(tiny_config("e2e+ds", output_dir=str(tmp_path / "interrupted"), **sizes))

    def stop_at_first_checkpoint(metrics, ckpt_dir):
        if ckpt_dir is not None:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, reporter=stop_at_first_checkpoint, progress=False)
    ckpt = latest_checkpoint(cfg.output_dir)
    assert load_checkpoint(ckpt)["n_samples"] == n_samples // 2
    resumed = train(cfg, resume_from=ckpt, progress=False)

    a = load_checkpoint(latest_checkpoint(straight_cfg.output_dir))["sae"]
    b = load_checkpoint(latest_checkpoint(cfg.output_dir))["sae"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed == straight


@pytest.mark.slow
def test_reporter_gets_evals_checkpoints_and_a_final_row(tiny_config):
    calls = []
    train(run_config_from_dict(tiny_config()), reporter=lambda m, c: calls.append((m, c)), progress=False)
    assert [m["n_samples"] for m, _ in calls] == [32, 64]
    assert all(c is not None and (c / "checkpoint.pt").is_file() for _, c in calls)
    assert [m["final"] for m, _ in calls] == [False, True] and "ce_loss_increase" in calls[0][0]


def poison_total_loss(monkeypatch, bad: float) -> None:
    """The loss times ``bad`` (nan, inf) after 5 steps (2 micro-batches each)."""
    step_mod = importlib.import_module("e2e_sae.step")
    real = step_mod.total_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, terms = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * bad if calls["n"] > 10 else loss), terms

    monkeypatch.setattr(step_mod, "total_loss", poisoned)


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tiny_config, monkeypatch):
    cfg = run_config_from_dict(tiny_config("local"))
    train_mod = importlib.import_module("e2e_sae.train")
    poison_total_loss(monkeypatch, float("nan"))
    with pytest.raises(train_mod.TrainingDiverged, match="last good checkpoint"):
        train(cfg, progress=False)
    ckpt = latest_checkpoint(cfg.output_dir)
    assert (
        load_checkpoint(ckpt)["n_samples"] == 32
        and torch.isfinite(load_checkpoint(ckpt)["sae"]["decoder.weight"]).all()
    )


def test_lr_schedule_warmup_then_cosine_to_min():
    assert lr_factor(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


@pytest.mark.slow
def test_compiled_sae_trains_to_the_same_metrics(tiny_config, tmp_path):
    plain = train(run_config_from_dict(tiny_config(output_dir=str(tmp_path / "plain"))), progress=False)
    compiled_cfg = run_config_from_dict(tiny_config(**{"train.compile": True}))
    compiled = train(compiled_cfg, progress=False)
    assert compiled["l0"] == pytest.approx(plain["l0"], rel=1e-4)
    assert compiled["ce_loss_increase"] == pytest.approx(plain["ce_loss_increase"], rel=1e-3, abs=1e-5)
    sd = load_checkpoint(latest_checkpoint(compiled_cfg.output_dir))["sae"]
    assert set(sd) == {"encoder.0.weight", "encoder.0.bias", "decoder.weight", "decoder.bias"}


def write_config(path, raw) -> str:
    import yaml

    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.slow
def test_cli_resume_continues_bit_for_bit(tiny_config, tmp_path, monkeypatch, capsys):
    """`python -m e2e_sae.train CONFIG --resume` after a run died right after its first checkpoint ends
    with the SAE weights and metrics.json of an uninterrupted run (the README's claim, via the CLI)."""
    loop_mod = importlib.import_module("e2e_sae.loop")
    sizes = {"train.n_samples": 64, "train.checkpoint_every_n_samples": 32}
    straight = write_config(tmp_path / "straight.yaml", tiny_config("e2e+ds", output_dir=str(tmp_path / "a"), **sizes))
    assert main([straight, "--no-progress"]) == 0
    killed = write_config(tmp_path / "killed.yaml", tiny_config("e2e+ds", output_dir=str(tmp_path / "b"), **sizes))

    real_save = loop_mod.save_checkpoint

    def save_then_die(*args, **kwargs):
        path = real_save(*args, **kwargs)
        raise Interrupt(path)

    monkeypatch.setattr(loop_mod, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupt):
        main([killed, "--no-progress"])
    monkeypatch.setattr(loop_mod, "save_checkpoint", real_save)
    assert load_checkpoint(latest_checkpoint(tmp_path / "b"))["n_samples"] == 32
    assert not (tmp_path / "b" / "metrics.json").exists()
    capsys.readouterr()
    assert main([killed, "--resume", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "metrics.json").read_text()) == json.loads(
        (tmp_path / "a" / "metrics.json").read_text()
    )
    a = load_checkpoint(latest_checkpoint(tmp_path / "a"))["sae"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "b"))["sae"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_cli_exits_3_on_a_non_finite_loss_and_keeps_the_last_good_checkpoint(
    tiny_config, tmp_path, monkeypatch, capsys, bad
):
    poison_total_loss(monkeypatch, bad)
    path = write_config(tmp_path / "cfg.yaml", tiny_config("local", output_dir=str(tmp_path / "run")))
    assert main([path, "--no-progress"]) == 3
    err = capsys.readouterr().err.splitlines()[-1]  # after the datasets library's progress lines
    assert err.startswith(f"error: loss is {bad} at step 5 (40 samples); stopped.") and "lower train.lr" in err
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert ckpt["n_samples"] == 32 and torch.isfinite(ckpt["sae"]["decoder.weight"]).all()
    assert not (tmp_path / "run" / "metrics.json").exists()
