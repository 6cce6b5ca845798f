"""Fine-tuning a trained SAE (``finetune.parent``): it starts from exactly the parent's last SAE (and,
when asked, its Adam moments), resumes bit for bit, records its parent, and refuses a parent that does
not fit before any model loads. Also Karvonen's KL/MSE balance (``loss.balance_kl_to_mse``)."""

from __future__ import annotations

import json

import pytest
import torch

from e2e_sae.checkpoint import latest_checkpoint, load_checkpoint
from e2e_sae.config import ConfigError, run_config_from_dict
from e2e_sae.finetune import read_parent
from e2e_sae.losses import LossConfig, total_loss
from e2e_sae.session import Session
from e2e_sae.train import main, train


class Interrupt(Exception):
    pass


@pytest.fixture
def parent(tiny_config, tmp_path):
    """A finished local run of 64 samples (its output_dir)."""
    cfg = run_config_from_dict(tiny_config("local", output_dir=str(tmp_path / "parent")))
    train(cfg, progress=False)
    return cfg.output_dir


def child(tiny_config, tmp_path, parent, name="child", **dotted):
    """A KL + MSE fine-tune of ``parent`` (Karvonen's recipe), 32 samples unless told."""
    fields = {
        "output_dir": str(tmp_path / name),
        "finetune": {"parent": str(parent)},
        "loss.out_to_in": {"coeff": 1.0},
        "loss.balance_kl_to_mse": True,
        "train.n_samples": 32,
        "train.checkpoint_every_n_samples": 16,
        "train.eval_every_n_samples": 16,
        **dotted,
    }
    return tiny_config("e2e", **fields)


def test_a_finetune_starts_from_the_parents_last_sae_and_adam_moments(tiny_config, tmp_path, parent):
    last = load_checkpoint(latest_checkpoint(parent))
    assert last["n_samples"] == 64
    cfg = run_config_from_dict(child(tiny_config, tmp_path, parent, **{"finetune.optimizer_state": True}))
    session = Session.open([cfg])
    session.restore([None])
    (run,) = session.runs
    for key, value in last["sae"].items():
        assert torch.equal(run.sae.state_dict()[key], value), key
    moments = run.optimizer.state_dict()["state"]
    for i, saved in last["optimizer"]["state"].items():
        assert torch.equal(moments[i]["exp_avg"], saved["exp_avg"])
        assert torch.equal(moments[i]["exp_avg_sq"], saved["exp_avg_sq"])
    # the fine-tune's own schedule: its warm-up starts from its own lr, not the parent's decayed one
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.train.lr * (1 / cfg.train.warmup_steps))

    fresh = run_config_from_dict(child(tiny_config, tmp_path, parent, "fresh_adam"))
    session = Session.open([fresh])
    session.restore([None])
    assert session.runs[0].optimizer.state_dict()["state"] == {}


@pytest.mark.slow
def test_a_finetune_records_its_parent_and_resumes_bit_for_bit(tiny_config, tmp_path, parent):
    straight_cfg = run_config_from_dict(child(tiny_config, tmp_path, parent, "straight"))
    straight = train(straight_cfg, progress=False)
    assert straight["finetune_parent"] == str(latest_checkpoint(parent))
    assert straight["parent_n_samples"] == 64 and straight["n_samples"] == 32
    assert straight["parent_mode"] == "local" and straight["parent_total_n_samples"] == 64
    assert json.loads((straight_cfg.output_dir / "metrics.json").read_text()) == straight
    rows = [json.loads(line) for line in (straight_cfg.output_dir / "metrics.jsonl").read_text().splitlines()]
    alphas = [r["loss/kl_balance_alpha"] for r in rows if r["kind"] == "train"]
    assert alphas and all(a > 0 for a in alphas)  # the balance ran, with MSE/KL > 0
    saved = load_checkpoint(latest_checkpoint(straight_cfg.output_dir))["config"]
    assert saved["finetune"]["parent"] == str(parent)

    cfg = run_config_from_dict(child(tiny_config, tmp_path, parent, "interrupted"))

    def stop_at_first_checkpoint(metrics, ckpt_dir):
        if ckpt_dir is not None:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, reporter=stop_at_first_checkpoint, progress=False)
    resumed = train(cfg, resume_from=latest_checkpoint(cfg.output_dir), progress=False)
    a = load_checkpoint(latest_checkpoint(straight_cfg.output_dir))["sae"]
    b = load_checkpoint(latest_checkpoint(cfg.output_dir))["sae"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert {k: v for k, v in resumed.items() if k != "finetune_parent"} == {
        k: v for k, v in straight.items() if k != "finetune_parent"
    }


def test_finetune_fraction_sets_the_length_from_the_parent_run(tiny_config, tmp_path, parent):
    raw = child(tiny_config, tmp_path, parent, **{"finetune.fraction": 0.25})
    del raw["train"]["n_samples"]
    cfg = run_config_from_dict(raw)
    assert cfg.train.n_samples == 16
    # the resolved config (as config.yaml saves it) validates again without the parent
    assert run_config_from_dict(cfg.to_dict()).train.n_samples == 16


def test_finetune_fraction_is_of_what_the_parent_trained_not_its_configured_n_samples(tiny_config, tmp_path):
    """A parent configured for 60 samples trains whole steps of 8: 56. Half of it is 28, all of it 56,
    and both fit the parent's last checkpoint (before: 30 and 60, refused as disagreeing or too long)."""
    from e2e_sae.finetune import read_parent

    parent_cfg = run_config_from_dict(tiny_config("local", output_dir=str(tmp_path / "p60"), **{"train.n_samples": 60}))
    assert train(parent_cfg, progress=False)["n_samples"] == parent_cfg.train.trained_samples == 56
    for fraction, length in ((0.5, 28), (1.0, 56)):
        raw = child(tiny_config, tmp_path, parent_cfg.output_dir, f"half{fraction}", **{"finetune.fraction": fraction})
        del raw["train"]["n_samples"]
        cfg = run_config_from_dict(raw)
        assert cfg.train.n_samples == length
        parent = read_parent(cfg)  # the checks against the parent's checkpoint, before any model loads
        assert parent is not None and parent.n_samples == 56


def test_a_fraction_of_an_unfinished_parent_says_so(tiny_config, tmp_path):
    """A parent stopped at its first checkpoint (32 of the 64 samples it trains): a fraction of it is
    refused as unfinished, not as a train.n_samples that disagrees with the fraction."""
    from e2e_sae.finetune import read_parent

    parent_cfg = run_config_from_dict(tiny_config("local", output_dir=str(tmp_path / "cut")))

    def stop_at_first_checkpoint(metrics, ckpt_dir):
        if ckpt_dir is not None:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(parent_cfg, reporter=stop_at_first_checkpoint, progress=False)
    raw = child(tiny_config, tmp_path, parent_cfg.output_dir, **{"finetune.fraction": 0.5})
    del raw["train"]["n_samples"]
    with pytest.raises(ConfigError, match="finetune.parent: the parent.s last checkpoint .* is at 32 of the 64"):
        read_parent(run_config_from_dict(raw))


def test_a_finetune_of_a_copied_parent_records_where_the_parent_is_kept(tiny_config, tmp_path, parent):
    """A sweep's child reads a scratch copy of its parent, deleted when the trial ends; its metrics name
    the parent as stored (``finetune.copied_from``), not the copy."""
    import shutil

    copy = tmp_path / "scratch_copy"
    shutil.copytree(latest_checkpoint(parent), copy)
    stored = "s3://bucket/exp/parent_trial/checkpoint_000001"
    raw = child(tiny_config, tmp_path, copy, **{"finetune.copied_from": stored, "train.n_samples": 8})
    final = train(run_config_from_dict(raw), progress=False)
    assert final["finetune_parent"] == stored and final["parent_n_samples"] == 64


@pytest.mark.parametrize(
    ("dotted", "message"),
    [
        ({"finetune.parent": "MISSING"}, "finetune.parent: "),
        ({"sae.position": "blocks.2.hook_resid_pre"}, "sae.position: the parent SAE"),
        ({"sae.dict_size_to_input_ratio": 3.0}, "sae.dict_size_to_input_ratio: the parent SAE has ratio 2.0"),
        ({"train.n_samples": 128}, "train.n_samples: a fine-tune of 128 samples is longer than its parent's 64"),
        (
            {"train.effective_batch_size": 128},  # 32 samples, but one step trains 128
            "train.n_samples: a fine-tune of 128 samples (1 step(s) of 128) is longer than its parent's 64",
        ),
        ({"finetune.fraction": 0.5}, "finetune.fraction: 0.5 of the parent's 64 samples is 32, but train.n_samples"),
        ({"sae.architecture": "topk", "sae.k": 2, "loss.sparsity": None}, "sae.architecture: the SAE of finetune."),
    ],
)
def test_a_parent_that_does_not_fit_is_one_line_before_the_model_loads(
    tiny_config, tmp_path, parent, capsys, monkeypatch, dotted, message
):
    import e2e_sae.session

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(e2e_sae.session, "load_checked_model", no_model)
    raw = child(tiny_config, tmp_path, parent, **dotted)
    if raw["finetune"]["parent"] == "MISSING":
        raw["finetune"]["parent"] = str(tmp_path / "no_such_run")
    if raw["train"]["n_samples"] == 32 and "finetune.fraction" in dotted:
        raw["train"]["n_samples"] = 40
    path = tmp_path / "child.yaml"
    path.write_text(json.dumps(raw))
    assert main([str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "child").exists() or not any((tmp_path / "child").rglob("*.pt"))


def test_config_errors_name_the_field(tiny_config, tmp_path, parent):
    with pytest.raises(ConfigError, match="finetune.parent: the run starts from finetune.parent"):
        run_config_from_dict(child(tiny_config, tmp_path, parent, **{"sae.pretrained_path": str(parent)}))
    with pytest.raises(ConfigError, match="balance_kl_to_mse: balances logits_kl against out_to_in"):
        run_config_from_dict(tiny_config("e2e", **{"loss.balance_kl_to_mse": True}))
    with pytest.raises(ConfigError, match="finetune.fraction: .* is not a run's output_dir"):
        raw = child(tiny_config, tmp_path, tmp_path / "nowhere", **{"finetune.fraction": 0.5})
        del raw["train"]["n_samples"]
        run_config_from_dict(raw)


def test_the_kl_balance_weighs_kl_by_mse_over_kl_detached():
    """loss = MSE + (MSE/KL).detach() * KL: the value is 2 MSE, the gradient grad MSE + alpha grad KL."""
    torch.manual_seed(0)
    acts = torch.randn(2, 3, 4)
    acts_hat = torch.randn(2, 3, 4, requires_grad=True)
    logits_orig, logits = torch.randn(2, 3, 5), torch.randn(2, 3, 5, requires_grad=True)
    from e2e_sae.losses import logits_kl, mse, orig_log_probs

    cfg = LossConfig.model_validate(
        {"out_to_in": {"coeff": 1.0}, "logits_kl": {"coeff": 1.0}, "balance_kl_to_mse": True}
    )
    loss, terms = total_loss(
        cfg, c_norm=None, acts=acts, acts_hat=acts_hat, orig=orig_log_probs(logits_orig), logits_spliced=logits
    )
    m, k = mse(acts_hat, acts), logits_kl(logits_orig, logits)
    alpha = (m / k).item()
    assert terms["loss/kl_balance_alpha"].item() == pytest.approx(alpha)
    assert loss.item() == pytest.approx(2 * m.item(), rel=1e-6)
    loss.backward()
    want_hat = torch.autograd.grad(mse(acts_hat, acts), acts_hat)[0]
    want_logits = alpha * torch.autograd.grad(logits_kl(logits_orig, logits), logits)[0]
    torch.testing.assert_close(acts_hat.grad, want_hat)
    torch.testing.assert_close(logits.grad, want_logits)


def test_a_finetune_starts_from_an_sae_lens_directory_too(tiny_config, tmp_path, parent):
    """An SAE exported to the SAELens format (e2e_sae.export) is a parent like any SAE file: the
    fine-tune starts from the SAE it holds (the same function: the format folds the decoder norm into
    the weights), and its lineage knows no parent sample count."""
    from e2e_sae.dictionary import load_trained_sae
    from e2e_sae.export import export

    export(parent, tmp_path / "saelens")
    cfg = run_config_from_dict(child(tiny_config, tmp_path, tmp_path / "saelens"))
    session = Session.open([cfg])
    session.restore([None])
    (run,) = session.runs
    acts = torch.randn(4, 16)
    original = load_trained_sae(latest_checkpoint(parent)).sae
    with torch.no_grad():
        for got, want in zip(run.sae.eval()(acts), original(acts), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert run.parent is not None and run.parent.lineage() == {
        "finetune_parent": str(tmp_path / "saelens"),
        "parent_mode": None,
        "parent_n_samples": None,
        "parent_total_n_samples": None,
    }


def test_a_finetune_of_a_finetune_counts_every_ancestors_samples(tiny_config, tmp_path, parent):
    """The lineage a fine-tune records (and its export reads) holds its parent's mode and samples, and
    the samples of the parent's own parent when the parent is itself a fine-tune: 32 + 64."""
    first = run_config_from_dict(child(tiny_config, tmp_path, parent, "first"))
    train(first, progress=False)
    second = run_config_from_dict(child(tiny_config, tmp_path, first.output_dir, "second", **{"train.n_samples": 16}))
    read = read_parent(second)
    assert read is not None and read.lineage() == {
        "finetune_parent": str(latest_checkpoint(first.output_dir)),
        "parent_mode": "e2e",
        "parent_n_samples": 32,
        "parent_total_n_samples": 96,
    }
