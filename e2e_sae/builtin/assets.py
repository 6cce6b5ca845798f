"""The built-in model's files: the shipped tokenizer and model, checked against the shipped corpus, and
the token streams of the corpus's splits (tokenised once, then cached)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2e_sae.builtin import catalog
from e2e_sae.builtin.build import encode_files
from e2e_sae.builtin.corpus import shipped_corpus


def builtin_tokenizer(name: str = "pycode"):
    """The built-in tokenizer as a ``transformers.PreTrainedTokenizerFast`` (eos = pad = bos = catalog.EOS).

    Built from the ``tokenizers.Tokenizer`` object: transformers 5 silently encodes to ``[]`` when
    given the JSON as ``vocab_file=``.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    checked_manifest(name, need_model=False)
    path = catalog.ASSETS_DIR / catalog.TOKENIZER_FILE
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(path)),
        eos_token=catalog.EOS,
        pad_token=catalog.EOS,
        bos_token=catalog.EOS,
        clean_up_tokenization_spaces=False,
    )


def builtin_tokens(name: str = "pycode", split: str = "train") -> torch.Tensor:
    """The 1-D LongTensor token stream of ``split`` (files sorted, each followed by catalog.EOS).

    Cached as uint16 ``.npy`` under ``<cache>/tokens/``, keyed by the tokenizer's and the corpus
    archive's sha256, so only the first call tokenises (~seconds); later calls just load.
    """
    from tokenizers import Tokenizer

    catalog.check_split(split)
    man = checked_manifest(name, need_model=False)
    tok_path = catalog.ASSETS_DIR / catalog.TOKENIZER_FILE
    key = f"{man['tokenizer']['sha256'][:16]}-{man['corpus']['sha256'][:16]}"
    path = catalog.cache_dir() / "tokens" / f"{name}-{split}-{key}.npy"
    if not path.is_file():
        corpus = shipped_corpus()
        arr = encode_files(Tokenizer.from_file(str(tok_path)), corpus, corpus.split_files(split))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, path)
    return torch.from_numpy(np.load(path).astype(np.int64))


def builtin_model_path(name: str = "pycode") -> Path:
    """Path of the built-in checkpoint (a :func:`e2e_sae.native_lm.save_native_lm` file)."""
    checked_manifest(name, need_model=True)
    return catalog.ASSETS_DIR / catalog.MODEL_FILE


def checked_manifest(name: str, need_model: bool, directory: Path | None = None) -> dict[str, Any]:
    """The manifest of the assets in ``directory`` (default: the shipped ones), once it says its tokenizer
    (and model) were built from the corpus beside them. A mismatch means someone replaced one file
    without rebuilding the others, so the eval split might not be held out from the model: an error
    with the command that repairs it."""
    catalog.check_name(name)
    directory = catalog.ASSETS_DIR if directory is None else directory
    rebuild = f"rebuild them with `python -m e2e_sae.builtin build --out {directory}`"
    man = catalog.read_manifest(directory)
    tok_path = directory / catalog.TOKENIZER_FILE
    if man is None or not tok_path.is_file():
        raise FileNotFoundError(f"no built-in assets (manifest and tokenizer) in {directory}: reinstall the package")
    for what, path in (("corpus", directory / catalog.CORPUS_FILE), ("tokenizer", tok_path)):
        if man.get(what, {}).get("sha256") != catalog.sha256_file(path):
            raise RuntimeError(f"the built-in {what} in {directory} is not the one its manifest records: {rebuild}")
    if need_model and (man.get("model") is None or not (directory / catalog.MODEL_FILE).is_file()):
        raise FileNotFoundError(f"the built-in assets in {directory} have no trained model: {rebuild}")
    return man
