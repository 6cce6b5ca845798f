"""Grouped runs: each member equals a separate run of its own config.yaml, stops alone on a non-finite
loss, resumes exactly; members differing in a shared field are refused before any compute."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from e2e_sae.checkpoint import latest_checkpoint, load_checkpoint
from e2e_sae.config import ConfigError, load_run_config
from e2e_sae.group import member_configs, train_group
from e2e_sae.run_dir import DIVERGED_FILE
from e2e_sae.train import main, train

MEMBERS = [
    {"name": "a", "set": {"loss.sparsity.coeff": 0.05}},
    {"name": "b", "set": {"seed": 3, "train.lr": 5e-3, "sae.dict_size_to_input_ratio": 3.0}},
]


def grouped(tiny_config, mode, splice="auto", members=MEMBERS, **dotted):
    raw = tiny_config(mode, **dotted)
    raw["group"] = {"splice": splice, "members": members}
    return raw


def separate(run):
    """The member's own config.yaml, trained as a separate run in a sibling directory."""
    cfg = load_run_config(run.cfg.output_dir / "config.yaml", {"output_dir": f"{run.cfg.output_dir}_separate"})
    return cfg, train(cfg, progress=False)


@pytest.mark.parametrize("mode,splice", [("local", "auto"), ("e2e", "stacked"), ("e2e", "loop"), ("e2e+ds", "stacked")])
def test_member_equals_separate_run(tiny_config, mode, splice):
    spec, cfgs = member_configs(grouped(tiny_config, mode, splice))
    runs = train_group(spec, cfgs, progress=False)
    for run in runs:
        cfg, metrics = separate(run)
        assert run.final == metrics  # bitwise on CPU: same ops on the same shapes per member
        assert json.loads((run.cfg.output_dir / "metrics.json").read_text()) == metrics
        a = load_checkpoint(latest_checkpoint(run.cfg.output_dir))["sae"]
        b = load_checkpoint(latest_checkpoint(cfg.output_dir))["sae"]
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].final["n_dict_elements"] == 32 and runs[1].final["n_dict_elements"] == 48


def poison_member_b(monkeypatch, bad: float):
    """Member b's (seed 3) loss times ``bad`` (nan, inf) from its 5th micro-batch on; returns the real loss."""
    group_mod = importlib.import_module("e2e_sae.group")
    real = group_mod.member_loss
    calls = {"n": 0}

    def poisoned(cfg, *args):
        loss, terms = real(cfg, *args)
        if cfg.seed == 3:
            calls["n"] += 1
            if calls["n"] >= 5:
                loss = loss * bad
        return loss, terms

    monkeypatch.setattr(group_mod, "member_loss", poisoned)
    return real


def test_nan_in_one_member_stops_it_alone(tiny_config, monkeypatch):
    real = poison_member_b(monkeypatch, float("nan"))
    spec, cfgs = member_configs(grouped(tiny_config, "e2e"))
    runs = train_group(spec, cfgs, progress=False)
    assert runs[1].final is None and "loss is nan at step 2" in (cfgs[1].output_dir / DIVERGED_FILE).read_text()
    assert not (cfgs[1].output_dir / "metrics.json").exists()
    monkeypatch.setattr(importlib.import_module("e2e_sae.group"), "member_loss", real)
    _, metrics = separate(runs[0])
    assert runs[0].final == metrics  # the other member went on, unaffected


@pytest.mark.parametrize("splice", ["loop", "stacked"])
def test_members_share_one_p_orig_for_the_backward(tiny_config, splice):
    """The KL's backward keeps p_orig, a [batch, pos, vocab] fp32 tensor without gradient: a group
    computes it once per step and every member's graph holds that one tensor, not a copy each."""
    from e2e_sae.assemble import load_checked_model, splice_sae
    from e2e_sae.group import group_micro_step
    from e2e_sae.loop import Run
    from e2e_sae.step import StepStats

    members = [{"name": f"m{i}", "set": {"loss.sparsity.coeff": 0.05 * 2**i}} for i in range(3)]
    spec, cfgs = member_configs(grouped(tiny_config, "e2e", splice, members=members))
    model = load_checked_model(cfgs[0], torch.device("cpu"))
    runs = [Run(c, splice_sae(c, model, torch.device("cpu"), None)) for c in cfgs]
    tokens = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(0))
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        group_micro_step(stacked=splice == "stacked")(runs, tokens, [StepStats() for _ in runs])
    p_orig = [t for t in saved if t.shape == (4, 16, 40) and t.dtype == torch.float32 and not t.requires_grad]
    assert len(p_orig) == 3  # one saved per member's KL ...
    assert len({t.data_ptr() for t in p_orig}) == 1  # ... all the same tensor
    assert all(torch.allclose(t.sum(-1), torch.ones(4, 16)) for t in p_orig)  # a distribution per token
    assert all(r.sae.encoder[0].weight.grad is not None for r in runs)  # and the backward reached every member


@pytest.mark.slow
def test_group_resume_is_exact(tiny_config, tmp_path):
    spec, straight_cfgs = member_configs(grouped(tiny_config, "e2e+ds", output_dir=str(tmp_path / "straight")))
    straight = train_group(spec, straight_cfgs, progress=False)

    class Interrupt(Exception):
        pass

    def stop(metrics, ckpt_dir):
        if ckpt_dir is not None:
            raise Interrupt

    spec, cfgs = member_configs(grouped(tiny_config, "e2e+ds", output_dir=str(tmp_path / "killed")))
    with pytest.raises(Interrupt):  # killed after member a's first checkpoint, before member b's
        train_group(spec, cfgs, reporters=[stop, None], progress=False)
    resumed = train_group(spec, cfgs, resume=True, progress=False)
    for a, b in zip(straight, resumed, strict=True):
        assert a.final == b.final
        sa = load_checkpoint(latest_checkpoint(a.cfg.output_dir))["sae"]
        sb = load_checkpoint(latest_checkpoint(b.cfg.output_dir))["sae"]
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "members,match",
    [
        ([{"name": "a", "set": {"data.n_ctx": 8}}], r"group.members.a.set: data.n_ctx is shared by all members"),
        ([{"name": "a"}, {"name": "a"}], r"member names must be unique"),
        ([], r"group.members: List should have at least 1 item"),
        ([{"name": "a/b"}], r"group.members.0.name"),
    ],
)
def test_config_errors(tiny_config, members, match):
    with pytest.raises(ConfigError, match=match):
        member_configs(grouped(tiny_config, "e2e", members=members))


def test_members_differing_in_a_shared_field_are_refused(tiny_config, tmp_path):
    spec, cfgs = member_configs(grouped(tiny_config, "e2e"))
    other = cfgs[1].model_copy(update={"mode": "local"})
    with pytest.raises(ConfigError, match=r"^group member b: mode is 'local' but member a has 'e2e'; members may"):
        train_group(spec, [cfgs[0], other], progress=False)
    assert not cfgs[0].output_dir.exists()  # refused before anything was written


def test_cli_grouped_config_and_existing_output(tiny_config, tmp_path, capsys):
    import yaml

    path = tmp_path / "group.yaml"
    path.write_text(yaml.safe_dump(grouped(tiny_config, "local", **{"train.n_samples": 16})))
    assert main([str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("a: ") and "\nb: " in out
    assert main([str(path), "--no-progress"]) == 2  # the group's output_dir holds results: refused
    assert "already holds files" in capsys.readouterr().err


def test_cli_exits_3_when_a_member_diverges_after_the_others_finish(tiny_config, tmp_path, monkeypatch, capsys):
    import yaml

    poison_member_b(monkeypatch, float("inf"))
    path = tmp_path / "group.yaml"
    path.write_text(yaml.safe_dump(grouped(tiny_config, "e2e")))
    assert main([str(path), "--no-progress"]) == 3
    captured = capsys.readouterr()
    assert captured.out.startswith("a: ") and "(wrote " in captured.out
    assert "b: error: loss is inf at step 2" in captured.err
    out = tiny_config("e2e")["output_dir"]
    assert (tmp_path / out / "a" / "metrics.json").is_file() and not (tmp_path / out / "b" / "metrics.json").exists()
