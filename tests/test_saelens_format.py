"""The SAELens format through the real sae-lens 6.54 (its own venv, ``E2E_SAE_SAELENS_DIR``, built by
``python -m e2e_sae.bench --setup-saelens DIR``): an SAE we export, of every architecture (with and
without input normalisation), loads with ``SAE.load_from_disk`` and encodes and decodes as ours does;
SAEs that sae-lens saves import here and reconstruct as sae-lens does; and the tiny HF GPT-2 loaded the
way SAELens loads it (``model_from_pretrained_kwargs``) gives our hook activations. Float64 on both
sides, so 1e-6 tests the conventions (e2e_sae/saelens_format.py), not rounding."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from e2e_sae.architectures import make_architecture
from e2e_sae.architectures.spec import resolve_knobs
from e2e_sae.bench.reference import reference_env
from e2e_sae.bench.saelens import saelens_python
from e2e_sae.export import to_saelens
from e2e_sae.lm import load_language_model
from e2e_sae.sae import SAE, read_sae_file, sae_from_file
from e2e_sae.saelens_format import model_from_pretrained_kwargs

pytestmark = pytest.mark.skipif(
    not os.environ.get("E2E_SAE_SAELENS_DIR"),
    reason="set E2E_SAE_SAELENS_DIR to a dir prepared by python -m e2e_sae.bench --setup-saelens DIR",
)
WORKER = Path(__file__).with_name("saelens_format_worker.py")
D_IN, N_DICT, TOKENS, HOOK = 16, 32, 24, "blocks.1.hook_resid_pre"
# case -> (architecture, knobs, input scale s or None); s is what the first batch would have set
EXPORT_CASES = {
    "relu": ("relu", {}, None),
    "relu_mean_norm": ("relu", {}, 0.37),
    "topk": ("topk", {"k": 5}, 0.37),
    "batchtopk": ("batchtopk", {"k": 5}, 2.5),
    "matryoshka_batchtopk": ("matryoshka_batchtopk", {"k": 5, "matryoshka_prefixes": [0.25, 0.5]}, 0.37),
    "jumprelu": ("jumprelu", {}, 0.37),
}
SAELENS_CLASS = {"relu": "StandardSAE", "topk": "TopKSAE"}


def our_sae(name: str) -> SAE:
    """Random weights, decoder columns of random norm (the forward normalises them), float64."""
    arch, knobs, scale = EXPORT_CASES[name]
    g = torch.Generator().manual_seed(len(name))
    normalization = "none" if scale is None else "mean_norm"
    sae = SAE(D_IN, N_DICT, make_architecture(arch, resolve_knobs(arch, knobs), N_DICT), normalization).double()
    with torch.no_grad():
        sae.encoder[0].weight.copy_(0.3 * torch.randn(N_DICT, D_IN, generator=g) / (scale or 1.0))
        sae.encoder[0].bias.copy_(0.2 * torch.randn(N_DICT, generator=g))
        sae.decoder.weight.copy_(torch.randn(D_IN, N_DICT, generator=g) * (0.5 + torch.rand(N_DICT, generator=g)))
        sae.decoder.bias.copy_(0.1 * torch.randn(D_IN, generator=g))
        if scale is not None:
            sae.input_scale.fill_(scale)
        if arch == "jumprelu":
            sae.arch.log_threshold.copy_(torch.log(0.05 + 0.3 * torch.rand(N_DICT, generator=g)))
        if arch in ("batchtopk", "matryoshka_batchtopk"):
            sae.arch.threshold.fill_(0.15)
    return sae.eval()


def run_dict(name: str) -> dict:
    arch, knobs, _ = EXPORT_CASES[name]
    return {
        "mode": "e2e",
        "model": {"name": "gpt2", "weight_processing": "hooked_transformer"},
        "data": {"n_ctx": 128, "train": {"name": "apollo-research/Skylion007-openwebtext-tokenizer-gpt2"}},
        "sae": {"position": HOOK, "architecture": arch, **knobs},
    }


# SAEs that sae-lens saves: name -> (worker architecture, config keywords, parameters)
def saelens_saved_cases() -> dict[str, tuple[str, dict, dict]]:
    g = torch.Generator().manual_seed(7)
    cases = {}
    for name, arch, cfg in [
        ("standard", "standard", {"apply_b_dec_to_input": True}),
        ("standard_no_b_dec", "standard", {"apply_b_dec_to_input": False}),
        ("topk_rescaled", "topk", {"k": 5, "rescale_acts_by_decoder_norm": True}),
        ("topk_no_b_dec", "topk", {"k": 5, "rescale_acts_by_decoder_norm": True, "apply_b_dec_to_input": False}),
        ("jumprelu", "jumprelu", {"apply_b_dec_to_input": True}),
        ("batchtopk", "batchtopk", {"k": 5, "rescale_acts_by_decoder_norm": False}),
    ]:
        params = {
            "W_enc": 0.3 * torch.randn(D_IN, N_DICT, generator=g, dtype=torch.float64),
            "b_enc": 0.2 * torch.randn(N_DICT, generator=g, dtype=torch.float64),
            "W_dec": torch.randn(N_DICT, D_IN, generator=g, dtype=torch.float64)
            * (0.2 + torch.rand(N_DICT, 1, generator=g, dtype=torch.float64)),
            "b_dec": 0.1 * torch.randn(D_IN, generator=g, dtype=torch.float64),
        }
        if arch == "jumprelu":
            params["threshold"] = 0.05 + 0.3 * torch.rand(N_DICT, generator=g, dtype=torch.float64)
        if arch == "batchtopk":
            params["W_dec"] = F.normalize(params["W_dec"], dim=-1)  # as SAELens's training keeps them
            params["topk_threshold"] = torch.tensor(0.15, dtype=torch.float64)
        kwargs = {"center_writing_weights": False}  # SAELens's runner default: no processing
        meta = {"hook_name": HOOK, "model_name": "gpt2", "model_from_pretrained_kwargs": kwargs}
        cases[name] = (arch, {"d_in": D_IN, "d_sae": N_DICT, "dtype": "float64", "metadata": meta, **cfg}, params)
    return cases


@pytest.fixture(scope="module")
def worker(hf_assets, tmp_path_factory):
    """One worker run: our exports loaded by sae-lens, sae-lens's saves, and the model SAELens's way."""
    work = tmp_path_factory.mktemp("saelens_format")
    x = 1.5 * torch.randn(TOKENS, D_IN, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours, load = {}, []
    for name in EXPORT_CASES:
        sae = our_sae(name)
        out = sae.forward_with_stats(x)
        ours[name] = (out.c.detach(), out.acts_hat.detach())
        to_saelens(sae, run_dict(name)).write(work / "ours" / name)
        load.append({"dir": str(work / "ours" / name), "x": x})
    save = [
        {"dir": str(work / "theirs" / name), "architecture": arch, "cfg": cfg, "params": params, "x": x}
        for name, (arch, cfg, params) in saelens_saved_cases().items()
    ]
    tokens = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(1))
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(3)] + ["blocks.1.hook_mlp_out"]
    model = [
        {"path": str(hf_assets["gpt2"]), "tokens": tokens, "hooks": hooks, "kwargs": model_from_pretrained_kwargs(wp)}
        for wp in ("hooked_transformer", "none")
    ]
    torch.save({"load": load, "save": save, "model": model}, work / "spec.pt")
    python = saelens_python(Path(os.environ["E2E_SAE_SAELENS_DIR"]))
    proc = subprocess.run(
        [str(python), "-P", "-s", str(WORKER), str(work / "spec.pt"), str(work / "out.pt")],
        cwd=work,
        env=reference_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = torch.load(work / "out.pt", weights_only=True)
    return work, x, ours, theirs, tokens, hooks


def close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(a.double(), b.double(), rtol=1e-6, atol=1e-6, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("name", list(EXPORT_CASES))
def test_exported_sae_loads_in_saelens_and_encodes_and_decodes_as_ours(worker, name):
    _, _, ours, theirs, _, _ = worker
    got = theirs["load"][list(EXPORT_CASES).index(name)]
    arch = EXPORT_CASES[name][0]
    assert got["class"] == SAELENS_CLASS.get(arch, "JumpReLUSAE")
    assert got["cfg"]["metadata"]["hook_name"] == HOOK and got["cfg"]["normalize_activations"] == "none"
    assert got["cfg"]["metadata"]["model_from_pretrained_kwargs"] == model_from_pretrained_kwargs("hooked_transformer")
    c, x_hat = ours[name]
    assert 0 < int((c != 0).sum()) < c.numel()  # sparse, not all off
    assert torch.equal(got["c"] != 0, c != 0)
    close(got["c"], c, "dictionary activations")
    close(got["x_hat"], x_hat, "reconstruction")
    close(got["forward"], x_hat, "forward")


@pytest.mark.parametrize("name", list(saelens_saved_cases()))
def test_sae_saved_by_saelens_imports_and_reconstructs_as_saelens(worker, name):
    work, x, _, theirs, _, _ = worker
    got = theirs["save"][list(saelens_saved_cases()).index(name)]
    sae_file = read_sae_file(work / "theirs" / name, HOOK)
    assert sae_file.weight_processing == "none" and sae_file.position == HOOK
    sae = sae_from_file(sae_file).double().eval()
    out = sae.forward_with_stats(x)
    # our decoder is used at unit norm: each latent's decoder norm moved into its activation, where
    # SAELens's TopK with rescale_acts_by_decoder_norm has it already
    norms = load_file(str(work / "theirs" / name / "sae_weights.safetensors"))["W_dec"].double().norm(dim=-1)
    if saelens_saved_cases()[name][1].get("rescale_acts_by_decoder_norm") and got["class"] == "TopKSAE":
        norms = torch.ones_like(norms)
    assert 0 < int((got["c"] != 0).sum()) < got["c"].numel()
    close(out.c.detach(), got["c"] * norms, "dictionary activations (times decoder norms)")
    close(out.acts_hat.detach(), got["x_hat"], "reconstruction")


def test_hook_activations_agree_with_the_model_as_saelens_loads_it(worker, hf_assets):
    """SAELens loads ``HookedTransformer.from_pretrained_no_processing(name, **model_from_pretrained_kwargs)``;
    our config's weight processing, exported as those kwargs, gives the same activations at every hook
    (so an exported SAE sees what it was trained on) and the same log-probs."""
    _, _, _, theirs, tokens, hooks = worker
    for got, processing in zip(theirs["model"], ("hooked_transformer", "none"), strict=True):
        model = load_language_model(str(hf_assets["gpt2"]), None, device="cpu", weight_processing=processing)
        with torch.no_grad():
            logits, cache = model.run_with_cache(tokens)
        for hook in hooks:
            torch.testing.assert_close(cache[hook], got["hooks"][hook], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logits.log_softmax(-1), got["log_probs"], rtol=1e-5, atol=1e-5)
    # and the two processings differ at the residual stream, so the comparison can tell them apart
    assert (theirs["model"][0]["hooks"][HOOK] - theirs["model"][1]["hooks"][HOOK]).abs().max() > 1e-3


def test_a_local_model_directory_loads_in_saelens_as_docs_export_says(tmp_path):
    """docs/export.md, "An SAE of a model in a local directory": SAELens's load_model refuses a path as
    model_name (TransformerLens 3's official-name lookup); the documented loading through TL3's
    lower-level loaders gives the HF model's log-probs under all four processing flags and runs the
    SAE; a path with "llama" in it takes TL3's Llama presets by name (none matched: an error; llama-30b
    matched: its dimensions) unless reached through a symlink without it; an official name with
    hf_model= takes the official model's dimensions."""
    python = saelens_python(Path(os.environ["E2E_SAE_SAELENS_DIR"]))
    worker = Path(__file__).with_name("saelens_local_model_worker.py")
    proc = subprocess.run(
        [str(python), "-P", "-s", str(worker), str(tmp_path), str(tmp_path / "out.json")],
        cwd=tmp_path,
        env=reference_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((tmp_path / "out.json").read_text())
    assert got["load_model"].startswith(f"ValueError: {tmp_path}/models/my_model not found. Valid official model names")
    for case in ("documented", "documented_symlink"):
        diff, shape = got[case].removeprefix("ok: max_logprob_diff=").split(" run_with_saes=")
        assert float(diff) < 1e-5 and shape == "(2, 16, 100)", got[case]
    assert got["documented_llama_name"] == "AttributeError: 'NoneType' object has no attribute 'hidden_size'"
    assert got["llama_30b_name_dims"] == "ok: d_model=6656 n_layers=60"
    assert got["official_name_hf_model"].startswith("IndexError")
