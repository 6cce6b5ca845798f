"""Tiny HF models built offline: a GPT-2-architecture model with a byte-level BPE tokenizer saved
beside it, a GPT-NeoX (rotary positions) one, and a raw-text corpus (see the session fixtures in
conftest.py). Also imported by the reference-venv tests' worker spec."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

WORDS = (
    "the quick brown fox jumps over a lazy dog while small birds sing in tall green trees near "
    "the old river and children play with red balls"
).split()


def write_text_corpus(path: Path, n_rows: int, seed: int) -> Path:
    """Sentences drawn from a small vocabulary with a fixed bigram habit, so there is structure to learn."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n_rows):
            i = rng.randrange(len(WORDS))
            words = [WORDS[(i + k + (rng.random() < 0.2)) % len(WORDS)] for k in range(rng.randint(8, 20))]
            f.write(json.dumps({"text": " ".join(words) + "."}) + "\n")
    return path


def build_tokenizer(corpus: Path, out_dir: Path, vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on ``corpus``, saved as a transformers fast tokenizer
    (built from a ``tokenizers`` object: ``GPT2TokenizerFast(vocab_file=...)`` encodes to [] in
    transformers 5)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    fast.save_pretrained(out_dir)
    return fast


def _perturb_norms(model: torch.nn.Module, seed: int) -> None:
    """Random LayerNorm gains and biases (init leaves them at 1 and 0, where folding is a no-op)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.add_(0.2 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.add_(0.1 * torch.randn(mod.bias.shape, generator=g))


def build_gpt2(out_dir: Path, tokenizer_dir: Path | None = None, seed: int = 0) -> Path:
    """``GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=64, n_head=4, vocab_size=512))`` with perturbed
    LayerNorms, and the tokenizer files of ``tokenizer_dir`` copied beside it (None: no tokenizer)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(
        GPT2Config(n_layer=3, n_embd=64, n_head=4, vocab_size=512, n_positions=128, bos_token_id=0, eos_token_id=0)
    )
    _perturb_norms(model, seed)
    model.save_pretrained(out_dir)
    _copy_tokenizer(tokenizer_dir, out_dir)
    return out_dir


def build_neox(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A 2-layer GPT-NeoX (Pythia's architecture: rotary positions, parallel attention + MLP)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(
        GPTNeoXConfig(
            num_hidden_layers=2,
            hidden_size=64,
            num_attention_heads=4,
            intermediate_size=128,
            vocab_size=512,
            max_position_embeddings=128,
            rotary_pct=0.25,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    _perturb_norms(model, seed)
    model.save_pretrained(out_dir)
    _copy_tokenizer(tokenizer_dir, out_dir)
    return out_dir


def _copy_tokenizer(tokenizer_dir: Path | None, out_dir: Path) -> None:
    if tokenizer_dir is None:
        return
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_dir / name).exists():
            (out_dir / name).write_bytes((tokenizer_dir / name).read_bytes())
