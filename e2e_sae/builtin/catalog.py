"""What the built-in model and corpus are and where their files live. Imports nothing else of the package.

The corpus is CPython 3.11.7's standard library, shipped as an archive; see :mod:`e2e_sae.builtin.corpus`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

PREFIX = "builtin:"  # model.name / data.*.name / data.tokenizer: builtin:<name>
NAMES = ("pycode",)
ASSETS_DIR = Path(__file__).parent.parent / "builtin_assets"
EOS = "<|endoftext|>"
VOCAB_SIZE = 4096
EVAL_PER_10K = 500  # 5% of files go to the held-out split
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
TOKENIZER_FILE, MODEL_FILE, MANIFEST_FILE = "tokenizer.json", "model.pt", "manifest.json"
CORPUS_FILE = "corpus.tar.gz"  # the shipped corpus (e2e_sae.builtin.corpus)
LICENSE_FILE = "PYTHON-LICENSE.txt"  # the PSF licence of the shipped CPython sources
SPLITS = ("train", "eval")

MODEL_CFG: dict[str, Any] = dict(
    n_layers=3,
    d_model=128,
    n_heads=4,
    d_head=32,
    d_mlp=512,
    n_ctx=128,
    act_fn="gelu",
    normalization_type="LN",
    seed=0,
)  # d_vocab is filled in from the trained tokenizer
DEFAULT_STEPS = 3000
TRAIN_HPARAMS: dict[str, Any] = dict(
    batch_size=16,
    lr=3e-3,
    warmup_steps=100,
    min_lr_factor=0.1,
    weight_decay=0.1,
    betas=(0.9, 0.95),
    grad_clip=1.0,
    seed=0,
    threads=2,
)


def parse_name(name: str | None) -> str | None:
    """``"builtin:pycode"`` -> ``"pycode"``; None for any other name."""
    return name[len(PREFIX) :] if name is not None and name.startswith(PREFIX) else None


def check_name(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"unknown builtin model/corpus {name!r}: valid names are {', '.join(NAMES)}")


def cache_dir() -> Path:
    """Root of everything this package caches: ``$E2E_SAE_CACHE``, default ``~/.cache/e2e_sae``."""
    return Path(os.environ.get("E2E_SAE_CACHE", "~/.cache/e2e_sae")).expanduser()


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")


# ----------------------------------------------------------------------------- split
def split_of(relpath: str) -> str:
    """``"eval"`` for ~5% of files, else ``"train"``: a pure function of the relative path, so the
    split is the same on every machine and a file never changes side when others are added."""
    h = int.from_bytes(hashlib.sha256(relpath.encode()).digest()[:8], "big")
    return "eval" if h % 10_000 < EVAL_PER_10K else "train"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(directory: Path | str) -> dict[str, Any] | None:
    path = Path(directory) / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else None
