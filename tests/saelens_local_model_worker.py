"""Runs in the sae-lens venv (tests/test_saelens_format.py): what TransformerLens 3 does with an SAE whose
``metadata.model_name`` is a local HF directory, and the loading docs/export.md gives for it ("An SAE
of a model in a local directory, in SAELens"). Offline: a 2-layer Llama-architecture model with a
word-level tokenizer is written into ``WORK/models/<name>``, under names with and without "llama".

``python saelens_local_model_worker.py WORK OUT.json``: OUT.json maps each case to ``"ok: ..."`` or
``"<ExceptionType>: <first line>"``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

FLAGS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")


def write_models(root: Path):
    """The same tiny Llama under three directory names; returns it (float32, eval)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=100,
        max_position_embeddings=64,
    )
    hf = LlamaForCausalLM(config).float().eval()
    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(99)} | {"<unk>": 99}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>", bos_token="w0", eos_token="w1")
    for name in ("my_model", "tiny-llama", "my-llama-30b-copy"):
        hf.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return hf


def load_as_documented(sae_dir: str):
    """docs/export.md's snippet (the same calls), for the SAE in ``sae_dir``."""
    from sae_lens import SAE, HookedSAETransformer
    from transformer_lens import loading
    from transformers import AutoModelForCausalLM

    sae = SAE.load_from_disk(sae_dir)
    path = sae.cfg.metadata.model_name  # the local directory the SAE was trained on
    flags = sae.cfg.metadata.model_from_pretrained_kwargs  # {} or the four processing flags
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    cfg = loading.get_pretrained_model_config(
        path, fold_ln=flags.get("fold_ln", False), device="cpu", dtype=torch.float32
    )
    model = HookedSAETransformer(cfg)  # the directory's tokenizer
    model.load_and_process_state_dict(
        loading.get_pretrained_state_dict(path, cfg, hf),
        **{f: flags.get(f, False) for f in FLAGS},
    )
    return sae, model, hf


def save_sae(model_dir: Path, out: Path) -> str:
    """An SAELens StandardSAE whose metadata names ``model_dir``, with the four processing flags."""
    from sae_lens import StandardSAE, StandardSAEConfig

    cfg = StandardSAEConfig(d_in=64, d_sae=128)
    cfg.metadata.model_name, cfg.metadata.hook_name = str(model_dir), "blocks.1.hook_resid_pre"
    cfg.metadata.model_from_pretrained_kwargs = dict.fromkeys(FLAGS, True)
    StandardSAE(cfg).save_model(str(out))
    return str(out)


def outcome(fn: Callable[[], str]) -> str:
    try:
        return "ok: " + fn()
    except Exception as err:  # noqa: BLE001 - the exception is the result
        return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"


def main(work: Path, out: Path) -> None:
    from sae_lens.load_model import load_model
    from transformer_lens import HookedTransformer, loading

    root = work / "models"
    hf = write_models(root)
    tokens = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(1))

    def documented(model_dir: Path) -> str:
        sae, model, hf_model = load_as_documented(save_sae(model_dir, work / f"sae_{model_dir.name}"))
        with torch.no_grad():
            ours, theirs = model(tokens).log_softmax(-1), hf_model(tokens).logits.log_softmax(-1)
            shape = tuple(model.run_with_saes(tokens, saes=[sae]).shape)
        return f"max_logprob_diff={(ours - theirs).abs().max().item():.3g} run_with_saes={shape}"

    def dims(model_dir: Path) -> str:
        cfg = loading.get_pretrained_model_config(str(model_dir))
        return f"d_model={cfg.d_model} n_layers={cfg.n_layers}"

    (root / "linked").symlink_to(root / "tiny-llama")
    kwargs = dict.fromkeys(FLAGS, True)
    results = {
        "load_model": outcome(lambda: str(load_model("HookedTransformer", str(root / "my_model"), "cpu", kwargs))),
        "documented": outcome(lambda: documented(root / "my_model")),
        "documented_llama_name": outcome(lambda: documented(root / "tiny-llama")),
        "documented_symlink": outcome(lambda: documented(root / "linked")),
        "llama_30b_name_dims": outcome(lambda: dims(root / "my-llama-30b-copy")),
        "official_name_hf_model": outcome(
            lambda: str(HookedTransformer.from_pretrained_no_processing("meta-llama/Llama-3.2-1B", hf_model=hf))
        ),
    }
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
