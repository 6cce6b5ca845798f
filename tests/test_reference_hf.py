"""Equality with the authors' setup on an HF model: our loader (HookedTransformer processing on) vs
TransformerLens 3's HookedTransformer with its default processing, from the same tiny GPT-2
weights, and an SAE scored by both sides. Needs the reference venv (``E2E_SAE_REFERENCE_DIR``, built by
``python -m e2e_sae.bench --setup-reference DIR``; ``.ci/run`` builds one)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from e2e_sae.bench.reference import reference_env, reference_python
from e2e_sae.lm import load_language_model
from e2e_sae.metrics import evaluate
from e2e_sae.sae import SAE
from e2e_sae.spliced import SplicedModel

pytestmark = pytest.mark.skipif(
    not os.environ.get("E2E_SAE_REFERENCE_DIR"),
    reason="set E2E_SAE_REFERENCE_DIR to a dir prepared by --setup-reference",
)
HF_WORKER = Path(__file__).resolve().parents[1] / "e2e_sae" / "bench" / "reference_hf_worker.py"
POSITION = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="module")
def reference(hf_assets, tmp_path_factory):
    """The reference worker's outputs for fixed tokens and a fixed SAE on the tiny GPT-2."""
    work = tmp_path_factory.mktemp("ref_hf")
    tokens = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    sae = SAE(64, 128)
    with torch.no_grad():  # zero encoder bias: about half the elements fire (L0 ~ 64 of 128)
        sae.encoder[0].bias.zero_()
    torch.save({"tokens": tokens, "sae": sae.state_dict()}, work / "inputs.pt")
    (work / "spec.json").write_text(
        json.dumps({"model_dir": str(hf_assets["gpt2"]), "inputs": str(work / "inputs.pt"), "position": POSITION})
    )
    python = reference_python(Path(os.environ["E2E_SAE_REFERENCE_DIR"]))
    env = reference_env()
    proc = subprocess.run(
        [str(python), "-P", "-s", str(HF_WORKER), str(work / "spec.json"), str(work / "out.pt")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tokens, sae, torch.load(work / "out.pt", weights_only=True)


def max_diffs(model, tokens, ref) -> tuple[float, float]:
    logits, cache = model.run_with_cache(tokens)
    resid = max((cache[f"blocks.{i}.hook_resid_pre"] - r).abs().max().item() for i, r in enumerate(ref["resid_pre"]))
    return resid, (logits.log_softmax(-1) - ref["log_probs"]).abs().max().item()


def test_processed_model_matches_hooked_transformer(hf_assets, reference):
    tokens, _, ref = reference
    ours = load_language_model(str(hf_assets["gpt2"]), weight_processing="hooked_transformer")
    raw = load_language_model(str(hf_assets["gpt2"]), weight_processing="none")
    resid, logp = max_diffs(ours, tokens, ref)
    raw_resid, raw_logp = max_diffs(raw, tokens, ref)
    print(
        f"\nvs HookedTransformer: processed resid_pre {resid:.1e}, log-probs {logp:.1e}; "
        f"unprocessed resid_pre {raw_resid:.1e}, log-probs {raw_logp:.1e}"
    )
    assert resid == 0.0 and logp == 0.0  # the README's "exactly (max difference 0.0)"
    assert raw_resid > 1e-3  # without processing the residual stream is not HookedTransformer's


def test_sae_scores_the_same_on_both_sides(hf_assets, reference):
    tokens, sae, ref = reference
    model = load_language_model(str(hf_assets["gpt2"]), weight_processing="hooked_transformer")
    ours = evaluate(SplicedModel(model, sae, POSITION), tokens, batch_size=len(tokens))
    theirs = ref["metrics"]
    print(
        f"\nours {ours['ce_loss_increase']:.6g} {ours['l0']:.6g} {ours['kl']:.6g}; theirs "
        f"{theirs['ce_loss_increase']:.6g} {theirs['l0']:.6g} {theirs['kl']:.6g}"
    )
    assert 0 < ours["l0"] < 128 and ours["kl"] > 0
    for key in ("ce_loss_original", "ce_loss_spliced", "ce_loss_increase", "l0", "kl"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-6), key
