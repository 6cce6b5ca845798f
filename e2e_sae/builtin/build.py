"""Building the built-in model ``builtin:pycode`` (why it exists, the corpus and the split:
:mod:`e2e_sae.builtin`): tokenizer training, tokenising the corpus, LM training and evaluation.

CLI: ``python -m e2e_sae.builtin build --out DIR [--steps N] [--stdlib [ROOT]]`` and ``python -m e2e_sae.builtin info``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2e_sae.builtin import catalog
from e2e_sae.builtin.corpus import Corpus, shipped_corpus, stdlib_corpus, write_archive
from e2e_sae.metrics import next_token_ce
from e2e_sae.native_lm import boot_native_lm, load_native_lm, save_native_lm
from e2e_sae.optim import lr_factor


def _cpu_bf16() -> bool:
    """Whether oneDNN has fast bf16 kernels here: bf16 autocast then trains ~1.5x faster on CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# ----------------------------------------------------------------------------- tokenizer and tokens
def train_tokenizer(texts: list[str], vocab_size: int = catalog.VOCAB_SIZE):
    """Byte-level BPE (GPT-2 style pre-tokenisation, so any text round-trips) with ``catalog.EOS`` as id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[catalog.EOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def encode_files(tok, corpus: Corpus, files: list[str]) -> np.ndarray:
    """The flat uint16 stream of ``files`` of ``corpus`` in the given order, each file's tokens followed by
    catalog.EOS."""
    eos = tok.token_to_id(catalog.EOS)
    encs = tok.encode_batch([corpus.text(f) for f in files], add_special_tokens=False)
    parts = [np.asarray(e.ids + [eos], dtype=np.uint16) for e in encs]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


# ----------------------------------------------------------------------------- training and evaluation
@torch.no_grad()
def eval_ce(
    model, tokens: torch.Tensor, n_ctx: int = 128, max_chunks: int | None = None, batch_size: int = 64
) -> tuple[float, torch.Tensor]:
    """Mean next-token CE (nats) over all predicted positions of the non-overlapping ``n_ctx``
    chunks of ``tokens`` (the tail shorter than n_ctx is dropped). Also returns the targets."""
    chunks = tokens[: len(tokens) // n_ctx * n_ctx].view(-1, n_ctx)[:max_chunks]
    total = 0.0
    for i in range(0, len(chunks), batch_size):
        x = chunks[i : i + batch_size]
        total += next_token_ce(model(x), x).item()
    targets = chunks[:, 1:].reshape(-1)
    return total / max(1, targets.numel()), targets


def unigram_baselines(train: torch.Tensor, targets: torch.Tensor, vocab: int) -> dict[str, float]:
    """Context-free baselines on the eval ``targets`` (nats/token):
    ``unigram_ce_train``: CE under the train split's token frequencies (add-one smoothed), i.e. the
    best a model that ignores context could learn from the training data;
    ``unigram_entropy_eval``: the eval targets' own unigram entropy (an optimistic bound for such a model)."""
    p_train = (torch.bincount(train, minlength=vocab).double() + 1) / (len(train) + vocab)
    ce_train = -p_train.log()[targets].mean().item()
    counts = torch.bincount(targets, minlength=vocab).double()
    p_eval = counts[counts > 0] / counts.sum()
    return {"unigram_ce_train": ce_train, "unigram_entropy_eval": -(p_eval * p_eval.log()).sum().item()}


def train_model(train: torch.Tensor, cfg: dict[str, Any], steps: int, hp: dict[str, Any]):
    """AdamW with warm-up + cosine on random ``n_ctx + 1`` windows of the train stream.

    fp32 weights; the forward runs under bf16 autocast where the CPU has bf16 kernels (``hp["bf16"]``)."""
    from tqdm import tqdm

    torch.manual_seed(hp["seed"])
    bridge = boot_native_lm(cfg)
    # Train the wrapped nn.Module: same parameter tensors, without the bridge's hook overhead (~10%).
    net = bridge.original_model
    net.train()
    decay = [p for p in net.parameters() if p.dim() >= 2]
    no_decay = [p for p in net.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hp["lr"],
        betas=hp["betas"],
    )
    gen = torch.Generator().manual_seed(hp["seed"])
    n_ctx, bs = cfg["n_ctx"], hp["batch_size"]
    window = torch.arange(n_ctx + 1)
    bar = tqdm(range(steps), desc="training builtin:pycode", unit="step", mininterval=2.0)
    loss_ema = None
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = hp["lr"] * lr_factor(step, steps, hp["warmup_steps"], hp["min_lr_factor"])
        idx = torch.randint(0, len(train) - n_ctx - 1, (bs,), generator=gen)[:, None] + window
        batch = train[idx]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=hp["bf16"]):
            logits = net(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), hp["grad_clip"])
        opt.step()
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{loss_ema:.3f}", refresh=False)
    bar.close()
    net.eval()
    return bridge, loss_ema


# ----------------------------------------------------------------------------- build
def build(out: Path | str, steps: int | None = None, corpus: Corpus | None = None, command: str | None = None):
    """Build corpus.tar.gz, tokenizer.json, model.pt and manifest.json into ``out``; returns the manifest.

    ``corpus`` defaults to the shipped one, so a rebuild trains on the same files everywhere.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / catalog.MANIFEST_FILE).unlink(missing_ok=True)  # a crash below must not leave a stale manifest
    steps = catalog.DEFAULT_STEPS if steps is None else steps
    corpus = shipped_corpus() if corpus is None else corpus
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    corpus_sha = write_archive(corpus, out / catalog.CORPUS_FILE)
    (out / catalog.LICENSE_FILE).write_text(corpus.licence)
    train_files, eval_files = corpus.split_files("train"), corpus.split_files("eval")
    tok_path = out / catalog.TOKENIZER_FILE
    tok = train_tokenizer([corpus.text(f) for f in train_files])
    tok.save(str(tok_path.with_suffix(".tmp")))
    os.replace(tok_path.with_suffix(".tmp"), tok_path)
    timings["tokenizer_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    train, eval_ = (torch.from_numpy(encode_files(tok, corpus, f).astype(np.int64)) for f in (train_files, eval_files))
    timings["tokenise_s"] = time.perf_counter() - t
    manifest: dict[str, Any] = {
        "name": "pycode",
        "corpus": _corpus_record(corpus, corpus_sha, train_files, eval_files, len(train), len(eval_)),
        "tokenizer": {
            "file": catalog.TOKENIZER_FILE,
            "sha256": catalog.sha256_file(tok_path),
            "vocab_size": tok.get_vocab_size(),
            "eos_token": catalog.EOS,
            "eos_id": tok.token_to_id(catalog.EOS),
            "file_bytes": tok_path.stat().st_size,
        },
        "command": command or f"build(out={str(out)!r}, steps={steps})",
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "tokenizers": __import__("tokenizers").__version__,
        },
    }
    hp = dict(catalog.TRAIN_HPARAMS, bf16=_cpu_bf16())
    cfg = dict(catalog.MODEL_CFG, d_vocab=tok.get_vocab_size())
    threads = torch.get_num_threads()
    torch.set_num_threads(hp["threads"])
    try:
        t = time.perf_counter()
        bridge, final_loss = train_model(train, cfg, steps, hp)
        timings["train_s"] = time.perf_counter() - t
        save_native_lm(bridge, cfg, out / catalog.MODEL_FILE, fp16=True)
        # Evaluate what we ship: the fp16 checkpoint reloaded, through the bridge the library uses.
        t = time.perf_counter()
        ce, targets = eval_ce(load_native_lm(out / catalog.MODEL_FILE), eval_, n_ctx=cfg["n_ctx"])
        timings["eval_s"] = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads)
    timings["total_s"] = time.perf_counter() - t0
    manifest["model"] = {
        "file": catalog.MODEL_FILE,
        "cfg": cfg,
        "dtype": "float16",
        "n_params": sum(p.numel() for p in bridge.parameters()),
        "file_bytes": (out / catalog.MODEL_FILE).stat().st_size,
    }
    manifest["training"] = {
        **hp,
        "steps": steps,
        "n_ctx": cfg["n_ctx"],
        "tokens": steps * hp["batch_size"] * cfg["n_ctx"],
        "epochs": steps * hp["batch_size"] * cfg["n_ctx"] / max(1, len(train)),
        "final_train_loss_ema": final_loss,
    }
    manifest["eval"] = _eval_record(ce, targets, train, cfg)
    manifest["timings_s"] = timings
    _write_json(out / catalog.MANIFEST_FILE, manifest)
    return manifest


def _corpus_record(
    corpus: Corpus, sha256: str, train_files: list[str], eval_files: list[str], train_tokens: int, eval_tokens: int
) -> dict[str, Any]:
    return {
        "file": catalog.CORPUS_FILE,
        "sha256": sha256,
        "source": corpus.source,
        "licence": catalog.LICENSE_FILE,
        "excluded_dirs": sorted(catalog.EXCLUDED_DIRS),
        "split_rule": f"eval iff int(sha256(relpath)[:8 bytes]) % 10000 < {catalog.EVAL_PER_10K}",
        "n_train_files": len(train_files),
        "n_eval_files": len(eval_files),
        "train_bytes": corpus.n_bytes(train_files),
        "eval_bytes": corpus.n_bytes(eval_files),
        "train_tokens": train_tokens,
        "eval_tokens": eval_tokens,
        "train_bytes_per_token": corpus.n_bytes(train_files) / max(1, train_tokens),
    }


def _eval_record(ce: float, targets: torch.Tensor, train: torch.Tensor, cfg: dict[str, Any]) -> dict[str, Any]:
    base = unigram_baselines(train, targets, cfg["d_vocab"])
    return {
        "n_ctx": cfg["n_ctx"],
        "n_chunks": len(targets) // (cfg["n_ctx"] - 1),
        "predicted_tokens": len(targets),
        "ce_loss": ce,
        **base,
        "ce_over_unigram_ce_train": ce / base["unigram_ce_train"],
    }


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- CLI
def _info(directory: Path) -> str:
    man = catalog.read_manifest(directory)
    if man is None:
        return f"no manifest in {directory}"
    c = man["corpus"]
    lines = [
        f"builtin:{man['name']} in {directory}",
        f"  corpus: {c['source']} ({c['n_train_files']} train files, {c['train_tokens']} tokens;"
        f" {c['n_eval_files']} held-out files, {c['eval_tokens']} tokens), sha256 {c['sha256'][:16]}",
        f"  tokenizer: vocab {man['tokenizer']['vocab_size']}, {man['tokenizer']['file_bytes'] / 1e6:.2f} MB",
    ]
    m, tr, ev = man["model"], man["training"], man["eval"]
    lines += [
        f"  model: {m['n_params'] / 1e6:.2f}M params, {m['file_bytes'] / 1e6:.2f} MB ({m['dtype']})",
        f"  trained: {tr['steps']} steps x {tr['batch_size']} x {tr['n_ctx']} = {tr['tokens'] / 1e6:.1f}M tokens"
        f" ({tr['epochs']:.2f} epochs), build {man['timings_s']['total_s'] / 60:.1f} min",
        f"  held-out CE {ev['ce_loss']:.3f} nats/token over {ev['predicted_tokens']} tokens (n_ctx {ev['n_ctx']});"
        f" unigram CE (train dist) {ev['unigram_ce_train']:.3f},"
        f" eval unigram entropy {ev['unigram_entropy_eval']:.3f}",
    ]
    return "\n".join(lines) + "\n\n" + json.dumps(man, indent=2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m e2e_sae.builtin", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train the tokenizer and model on the shipped corpus (or a stdlib's files)")
    b.add_argument(
        "--out", type=Path, required=True, help="output dir (e2e_sae/builtin_assets refreshes the shipped files)"
    )
    b.add_argument(
        "--steps", type=int, default=catalog.DEFAULT_STEPS, help=f"training steps (default {catalog.DEFAULT_STEPS})"
    )
    b.add_argument(
        "--stdlib",
        nargs="?",
        const="",
        default=None,
        metavar="ROOT",
        help="make the corpus from a standard library's .py files instead of the shipped archive "
        "(no ROOT: this interpreter's); the shipped archive was made so on CPython 3.11.7",
    )
    i = sub.add_parser("info", help="print a build's manifest (default: the shipped assets)")
    i.add_argument("--dir", type=Path, default=catalog.ASSETS_DIR)
    args = parser.parse_args(argv)
    if args.cmd == "build":
        if args.steps < 1:
            parser.error("--steps must be a positive integer")
        corpus = None if args.stdlib is None else stdlib_corpus(Path(args.stdlib) if args.stdlib else None)
        cmd = f"python -m e2e_sae.builtin build --out {args.out} --steps {args.steps}"
        if args.stdlib is not None:
            cmd += f" --stdlib {args.stdlib}".rstrip()
        build(args.out, steps=args.steps, corpus=corpus, command=cmd)
        print(_info(args.out))
    else:
        print(_info(args.dir))
