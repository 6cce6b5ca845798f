"""SAE architectures beyond ReLU (TopK, BatchTopK, JumpReLU, Matryoshka BatchTopK): every mode,
grouped runs, exact resume, checkpoints that record the architecture, evaluation and the dictionary
analysis; their config errors; input normalisation. Equality with SAELens: tests/test_saelens.py."""

from __future__ import annotations

import json

import pytest
import torch

from e2e_sae.assemble import seeded_sae
from e2e_sae.checkpoint import latest_checkpoint, load_checkpoint
from e2e_sae.config import ConfigError, load_run_config, run_config_from_dict
from e2e_sae.dictionary import dictionary_pass, load_eval_context, load_trained_sae
from e2e_sae.evaluate import main as evaluate_main
from e2e_sae.group import member_configs, train_group
from e2e_sae.spliced import SplicedModel
from e2e_sae.train import train
from e2e_sae.validate import preflight

K = 4  # of 32 dictionary elements (tiny model: d_in 16, ratio 2)
# Each architecture's knobs for the tiny runs (dead after 64 tokens, so AuxK works within the run).
ARCHS: dict[str, dict] = {
    "topk": {"sae.k": K, "sae.dead_after_tokens": 64},
    "batchtopk": {"sae.k": K, "sae.dead_after_tokens": 64, "sae.topk_threshold_lr": 0.5},
    "matryoshka_batchtopk": {"sae.k": K, "sae.matryoshka_prefixes": [0.25, 0.5], "sae.topk_threshold_lr": 0.5},
    "jumprelu": {"loss.sparsity.coeff": 0.01, "sae.jumprelu_bandwidth": 0.05, "sae.jumprelu_init_threshold": 0.05},
}


def arch_config(tiny_config, arch: str, mode: str = "e2e", **dotted) -> dict:
    raw = tiny_config(mode, **dotted)
    if arch != "jumprelu":
        del raw["loss"]["sparsity"]
    raw["sae"]["architecture"] = arch
    from e2e_sae.config import set_dotted

    for key, value in ARCHS[arch].items():
        set_dotted(raw, key, value)
    return raw


def rows(cfg) -> list[dict]:
    return [json.loads(line) for line in (cfg.output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", ["local", "e2e", "e2e+ds"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_each_architecture_trains_in_each_mode(tiny_config, arch, mode):
    cfg = run_config_from_dict(arch_config(tiny_config, arch, mode, **{"train.eval_every_n_samples": None}))
    metrics = train(cfg, progress=False)
    train_rows = [r for r in rows(cfg) if r["kind"] == "train"]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train_rows)
    assert 0 < metrics["l0"] <= 32 and metrics["alive_dict_elements"] > 0
    state = load_checkpoint(latest_checkpoint(cfg.output_dir))
    assert state["config"]["sae"]["architecture"] == arch
    assert state["config"]["sae"]["input_normalization"] == "mean_squared_norm"
    assert float(state["sae"]["input_scale"]) > 0
    if arch == "topk":
        assert metrics["l0"] <= K and all(r["train_l0"] <= K for r in train_rows)
    if arch in ("batchtopk", "matryoshka_batchtopk"):
        # training keeps k per token on average over the batch; evaluation thresholds instead
        assert all(r["train_l0"] == pytest.approx(K) for r in train_rows)
        assert metrics["threshold_inference"] is True
        assert metrics["inference_threshold"] == pytest.approx(float(state["sae"]["arch.threshold"]))
        assert metrics["inference_threshold"] > 0
    else:
        assert "threshold_inference" not in metrics
    if arch == "matryoshka_batchtopk":
        recon = {"local": "out_to_in", "e2e": "logits_kl", "e2e+ds": "in_to_orig"}[mode]
        assert f"loss/{recon}_prefixes" in train_rows[-1]
    if arch == "jumprelu":
        moved = state["sae"]["arch.log_threshold"] != torch.log(torch.tensor(0.05))
        assert moved.any() and "loss/sparsity" in train_rows[-1]


@pytest.mark.parametrize("form", ["saelens", "gao"])
def test_auxk_trains_dead_latents(tiny_config, form):
    dotted = {"train.eval_every_n_samples": None, "sae.auxk_form": form}
    cfg = run_config_from_dict(arch_config(tiny_config, "topk", "local", **dotted))
    train(cfg, progress=False)
    auxk = [r["loss/auxk"] for r in rows(cfg) if r["kind"] == "train"]
    assert auxk and auxk[-1] > 0  # after 64 tokens some of the 32 latents with k = 4 are dead and train on it


@pytest.mark.parametrize("arch", list(ARCHS))
def test_resume_is_exact(tiny_config, tmp_path, arch):
    sizes = {"train.checkpoint_every_n_samples": 32}
    straight_cfg = run_config_from_dict(arch_config(tiny_config, arch, "e2e", output_dir=str(tmp_path / "s"), **sizes))
    straight = train(straight_cfg, progress=False)
    cfg = run_config_from_dict(arch_config(tiny_config, arch, "e2e", output_dir=str(tmp_path / "i"), **sizes))

    class Interrupt(Exception):
        pass

    def stop(metrics, ckpt_dir):
        if ckpt_dir is not None:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, reporter=stop, progress=False)
    ckpt = latest_checkpoint(cfg.output_dir)
    resumed = train(cfg, resume_from=ckpt, progress=False)
    a = load_checkpoint(latest_checkpoint(straight_cfg.output_dir))["sae"]
    b = load_checkpoint(latest_checkpoint(cfg.output_dir))["sae"]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed == straight


@pytest.mark.parametrize("splice", ["stacked", "loop"])
def test_grouped_members_equal_separate_runs(tiny_config, splice):
    """Members differing in k, Matryoshka's prefix passes stacked or looped: each equals its own run."""
    raw = arch_config(tiny_config, "matryoshka_batchtopk", "e2e+ds")
    raw["group"] = {"splice": splice, "members": [{"name": "k4"}, {"name": "k6", "set": {"sae.k": 6, "seed": 2}}]}
    spec, cfgs = member_configs(raw)
    runs = train_group(spec, cfgs, progress=False)
    for run in runs:
        cfg = load_run_config(run.cfg.output_dir / "config.yaml", {"output_dir": f"{run.cfg.output_dir}_separate"})
        metrics = train(cfg, progress=False)
        assert run.final is not None
        for key, value in metrics.items():
            assert run.final[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_checkpoint_under_another_architecture_is_a_one_line_error(tiny_config, tmp_path):
    cfg = run_config_from_dict(arch_config(tiny_config, "topk", "local", output_dir=str(tmp_path / "topk")))
    train(cfg, progress=False)
    ckpt = latest_checkpoint(cfg.output_dir) / "checkpoint.pt"
    relu = run_config_from_dict(
        tiny_config(
            "local", output_dir=str(tmp_path / "relu"), **{"sae.pretrained_path": ckpt, "sae.architecture": "relu"}
        )
    )
    with pytest.raises(ConfigError, match=r"^sae.architecture: .* trained as topk .* set sae.architecture=topk$"):
        train(relu, progress=False)
    batch = run_config_from_dict(arch_config(tiny_config, "batchtopk", "local", output_dir=str(cfg.output_dir)))
    with pytest.raises(ConfigError, match=r"^sae.architecture: .*set sae.architecture=topk$"):
        train(batch, resume_from=latest_checkpoint(cfg.output_dir), progress=False)
    raw = arch_config(tiny_config, "topk", "local", output_dir=str(tmp_path / "none"))
    raw["sae"].update(pretrained_path=str(ckpt), input_normalization="none")
    with pytest.raises(
        ConfigError, match=r"^sae.input_normalization: .*set sae.input_normalization=mean_squared_norm$"
    ):
        train(run_config_from_dict(raw), progress=False)


def test_a_pretrained_sae_says_what_it_is_unless_the_config_says_so_on_purpose(tiny_config, tmp_path):
    """A relu config (the architecture left unset, a sparsity coefficient given) starting from a TopK
    checkpoint takes the architecture, k and no sparsity term from it, and trains."""
    cfg = run_config_from_dict(arch_config(tiny_config, "topk", "local", output_dir=str(tmp_path / "topk")))
    train(cfg, progress=False)
    raw = tiny_config("local", output_dir=str(tmp_path / "from"), **{"sae.pretrained_path": str(cfg.output_dir)})
    assert raw["loss"]["sparsity"] == {"coeff": 0.1} and "architecture" not in raw["sae"]
    taken = run_config_from_dict(raw)
    assert (taken.sae.architecture, taken.sae.k, taken.loss.sparsity) == ("topk", K, None)
    assert taken.sae.input_normalization == cfg.sae.input_normalization == "mean_squared_norm"
    assert train(taken, progress=False)["l0"] <= K


def test_evaluate_takes_the_architecture_knob_and_sparsity_shape_from_the_checkpoint(tiny_config, tmp_path, capsys):
    """``evaluate CONFIG --sae`` of a BatchTopK SAE with a relu config: one try, no --set needed; a
    --set that contradicts the SAE is refused naming --sae and the fix."""
    cfg = run_config_from_dict(arch_config(tiny_config, "batchtopk", "local", output_dir=str(tmp_path / "run")))
    final = train(cfg, progress=False)
    relu = tmp_path / "relu.yaml"
    relu.write_text(json.dumps(tiny_config("e2e", output_dir=str(tmp_path / "unused"))))
    assert evaluate_main([str(relu), "--sae", str(cfg.output_dir), "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["l0"] == pytest.approx(final["l0"])
    capsys.readouterr()
    said = ["--set", "sae.architecture=relu"]
    assert evaluate_main([str(relu), "--sae", str(cfg.output_dir), "--out", str(tmp_path / "no"), *said]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: sae.architecture: the SAE of --sae was trained as batchtopk but this run sets relu; "
        "set sae.architecture=batchtopk\n"
    )
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("arch", ["batchtopk", "jumprelu"])
def test_evaluate_and_dictionary_analysis_read_the_architecture(tiny_config, tmp_path, arch, capsys):
    cfg = run_config_from_dict(arch_config(tiny_config, arch, "e2e", output_dir=str(tmp_path / "run")))
    final = train(cfg, progress=False)
    ckpt = latest_checkpoint(cfg.output_dir)
    out = tmp_path / "eval"
    code = evaluate_main([str(cfg.output_dir / "config.yaml"), "--sae", str(ckpt / "checkpoint.pt"), "--out", str(out)])
    assert code == 0
    scored = json.loads((out / "metrics.json").read_text())
    assert scored["l0"] == pytest.approx(final["l0"]) and scored["ce_loss_increase"] == pytest.approx(
        final["ce_loss_increase"]
    )
    trained = load_trained_sae(ckpt)
    assert trained.sae.arch.name == arch and not trained.sae.training
    ctx = load_eval_context(trained.cfg)
    spliced = SplicedModel(ctx.model, trained.sae, trained.cfg.sae.position)
    stats = dictionary_pass(spliced, ctx.tokens, 4, k=3)
    assert stats.l0 == pytest.approx(final["l0"])  # the analysis encodes exactly as the eval did


def test_input_normalisation_scales_the_first_batch_to_the_target_norm(tiny_config):
    for norm, target in [("mean_squared_norm", 16.0), ("mean_norm", 4.0)]:
        raw = arch_config(tiny_config, "topk", "local")
        raw["sae"]["input_normalization"] = norm
        sae = seeded_sae(run_config_from_dict(raw), 16)
        acts = 7.0 * torch.randn(3, 5, 16)
        hat, c = sae(acts)
        scaled = acts * sae.input_scale
        measured = scaled.pow(2).sum(-1).mean() if norm == "mean_squared_norm" else scaled.norm(dim=-1).mean()
        assert float(measured) == pytest.approx(target, rel=1e-5)
        assert hat.shape == acts.shape and (c != 0).sum(-1).max() <= K
        scale = float(sae.input_scale)
        sae(3.0 * acts)
        assert float(sae.input_scale) == scale  # estimated once, on the first batch, then kept


def test_relu_keeps_the_reference_state_dict_and_no_normalisation(tiny_config):
    cfg = run_config_from_dict(tiny_config("e2e"))
    assert cfg.sae.architecture == "relu" and cfg.sae.input_normalization == "none"
    assert set(seeded_sae(cfg, 16).state_dict()) == {
        "encoder.0.weight",
        "encoder.0.bias",
        "decoder.weight",
        "decoder.bias",
    }
    assert cfg.sae.k is None and cfg.sae.jumprelu_bandwidth is None


@pytest.mark.parametrize(
    "arch,dotted,match",
    [
        (
            "relu",
            {"sae.k": 4},
            r"^sae.k: a knob of topk, batchtopk, matryoshka_batchtopk, but sae.architecture is relu",
        ),
        (
            "topk",
            {"loss.sparsity": {"coeff": 1.0}},
            r"^loss.sparsity: topk sets L0 by sae.k .*\(on the command line: --set loss.sparsity=null\)$",
        ),
        ("topk", {"sae.k": None}, r"^sae.k: topk needs it; set sae.k$"),
        ("topk", {"sae.k": 0}, r"^sae.k: got 0; give a value > 0$"),
        ("jumprelu", {"sae.jumprelu_bandwidth": 0}, r"^sae.jumprelu_bandwidth: got 0; give a value > 0$"),
        ("jumprelu", {"sae.k": 4}, r"^sae.k: a knob of .*jumprelu; drop sae.k or set sae.architecture$"),
        ("topk", {"sae.jumprelu_bandwidth": 0.1}, r"^sae.jumprelu_bandwidth: a knob of jumprelu, but"),
        ("relu", {"loss.sparsity.target_l0": 10}, r"^loss.sparsity.target_l0: a jumprelu knob"),
        ("jumprelu", {"loss.sparsity.p_norm": 2}, r"^loss.sparsity.p_norm: jumprelu penalises L0"),
        ("matryoshka_batchtopk", {"sae.matryoshka_prefixes": [0.5, 0.25]}, r"^sae.matryoshka_prefixes: .*increasing"),
        ("matryoshka_batchtopk", {"sae.matryoshka_prefixes": [0.5, 1.0]}, r"^sae.matryoshka_prefixes: .*\(0, 1\)"),
        ("topk", {"train.sae_kernel": "sparse"}, r"^train.sae_kernel: 'sparse' implements the relu SAE only"),
        ("relu", {"sae.auxk_form": "gao"}, r"^sae.auxk_form: a knob of topk, batchtopk, matryoshka_batchtopk, but"),
        ("topk", {"sae.auxk_form": "openai"}, r"^sae.auxk_form: Input should be 'saelens' or 'gao'$"),
    ],
)
def test_config_errors_name_the_field_and_the_fix(tiny_config, arch, dotted, match):
    raw = tiny_config("e2e") if arch == "relu" else arch_config(tiny_config, arch)
    from e2e_sae.config import set_dotted

    for key, value in dotted.items():
        set_dotted(raw, key, value)
    with pytest.raises(ConfigError, match=match) as err:
        run_config_from_dict(raw)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "arch,dotted,match",
    [
        ("topk", {"sae.k": 32}, r"^sae.k: 32 must be below the dictionary size 32; lower sae.k$"),
        (
            "matryoshka_batchtopk",
            {"sae.matryoshka_prefixes": [0.01, 0.5]},
            r"^sae.matryoshka_prefixes: .*sizes \[0, 16\]",
        ),
    ],
)
def test_knobs_that_do_not_fit_the_dictionary_fail_in_preflight(tiny_config, arch, dotted, match):
    raw = arch_config(tiny_config, arch)
    from e2e_sae.config import set_dotted

    for key, value in dotted.items():
        set_dotted(raw, key, value)
    with pytest.raises(ConfigError, match=match):
        preflight(run_config_from_dict(raw))


# AuxK on hand-sized tensors: d_in 4 (so k_aux = 2), the decoder the identity, x_hat = 0 (so e = x).
AUX_X = torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])
AUX_PRE = torch.tensor([[-1.0, 5.0, 0.5, 9.0], [-3.0, -0.5, -2.0, 9.0]])  # latent 3 is never dead here
# the residual's variance over the batch: mean (.5, 1, .5, -.5); each token's squared distance 1.75


def auxk_value(form: str, dead: list[bool]) -> float:
    from e2e_sae.architectures.topk import auxk_loss

    return float(auxk_loss(AUX_X, torch.zeros(2, 4), AUX_PRE, torch.eye(4), torch.tensor(dead), form))


@pytest.mark.parametrize(
    "form,dead,expected",
    [
        # saelens, 3 dead: token 0 keeps 5 and 0.5 -> error (-1, 3, .5, 0), 10.25; token 1 keeps the raw
        # negatives -0.5 and -2 -> (0, -.5, -3, 1), 10.25; mean 10.25 / d_in 4, times min(3/2, 1) = 1
        ("saelens", [True, True, True, False], 2.5625),
        # gao, 3 dead: token 0 as above, 10.25; token 1's ReLU values are 0 -> error -e, 2; 6.125 / 1.75
        ("gao", [True, True, True, False], 3.5),
        # saelens, 1 dead: -1 and -3 -> errors (-2, -2, 0, 0), 8 and (-3, 0, -1, 1), 11; 9.5 / 4 * min(1/2, 1)
        ("saelens", [True, False, False, False], 1.1875),
        # gao, 1 dead: ReLU values 0, no n_dead factor -> errors -e, 5 and 2; 3.5 / 1.75
        ("gao", [True, False, False, False], 2.0),
    ],
)
def test_auxk_forms_give_their_hand_computed_values(form, dead, expected):
    assert auxk_value(form, dead) == pytest.approx(expected, rel=1e-6)


def test_auxk_gao_form_is_zero_when_the_residual_has_no_variance():
    from e2e_sae.architectures.topk import auxk_loss

    same = AUX_X[:1].expand(2, 4)  # every token's error the same: variance 0 (dictionary_learning: NaN -> 0)
    dead = torch.tensor([True, True, True, False])
    assert float(auxk_loss(same, torch.zeros(2, 4), AUX_PRE, torch.eye(4), dead, "gao")) == 0


@pytest.mark.parametrize(
    "form,dead,expected",
    [
        # counts before the batch [10, 8, 0, 0], window 10, 2 tokens, latent 0 fires in the batch:
        # saelens chooses from the counts before it (latent 0); gao from the counts after it (latent 1:
        # 8 + 2 = 10 tokens without firing; latent 0 just fired) -> ReLU(5) on token 0 only:
        # errors (-1, 3, 0, 0), 10 and -e, 2; 6 / 1.75
        ("saelens", [True, False, False, False], 1.1875),
        ("gao", [False, True, False, False], 6 / 1.75),
    ],
)
def test_auxk_forms_choose_the_dead_set_before_or_after_counting_the_batch(form, dead, expected):
    from e2e_sae.architectures.topk import TopK

    arch = TopK(4, 1, aux_coeff=0.5, dead_after_tokens=10, auxk_form=form)
    arch.tokens_since_fired.copy_(torch.tensor([10, 8, 0, 0]))
    c = torch.zeros(2, 4)
    c[0, 0], c[1, 3] = 1.0, 1.0
    assert arch.auxk_dead(c).tolist() == dead
    (term,) = arch.aux_terms(AUX_X, torch.zeros(2, 4), AUX_PRE, c, torch.eye(4))
    assert (term.name, term.coeff) == ("auxk", 0.5) and float(term.value) == pytest.approx(expected, rel=1e-6)
    arch.after_forward(AUX_PRE, c)  # either way the counts then move the same: the batch's 2 tokens
    assert arch.tokens_since_fired.tolist() == [0, 10, 2, 0]


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka_batchtopk"])
def test_auxk_form_defaults_to_saelens_and_reaches_the_architecture(tiny_config, arch):
    assert seeded_sae(run_config_from_dict(arch_config(tiny_config, arch)), 16).arch.auxk_form == "saelens"
    cfg = run_config_from_dict(arch_config(tiny_config, arch, **{"sae.auxk_form": "gao"}))
    assert cfg.sae.auxk_form == "gao" and seeded_sae(cfg, 16).arch.auxk_form == "gao"


def test_input_normalisation_scales_known_norms_to_their_targets(tiny_config):
    # two tokens of squared norm 4 and 12 (d_in 16): mean_squared_norm s = sqrt(16 / 8) = sqrt(2), i.e.
    # sqrt(d_in) = 4 times dictionary_learning's 1 / sqrt(8); mean_norm s = 4 / ((2 + sqrt(12)) / 2)
    acts = torch.zeros(2, 16)
    acts[0, 0], acts[1, :3] = 2.0, 2.0
    for norm, expected in [("mean_squared_norm", 2**0.5), ("mean_norm", 8 / (2 + 12**0.5))]:
        raw = arch_config(tiny_config, "topk", "local")
        raw["sae"]["input_normalization"] = norm
        sae = seeded_sae(run_config_from_dict(raw), 16)
        sae(acts)
        assert float(sae.input_scale) == pytest.approx(expected, rel=1e-6)
