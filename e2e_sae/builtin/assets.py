"""The built-in model's files for this interpreter: the shipped ones when they match its standard
library, else a build in the cache (made once, under a file lock)."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from e2e_sae.builtin import catalog
from e2e_sae.builtin.build import build, encode_files

logger = logging.getLogger(__name__)


def builtin_tokenizer(name: str = "pycode"):
    """The built-in tokenizer as a ``transformers.PreTrainedTokenizerFast`` (eos = pad = bos = catalog.EOS).

    Built from the ``tokenizers.Tokenizer`` object: transformers 5 silently encodes to ``[]`` when
    given the JSON as ``vocab_file=``.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    path = _resolve(name, need_model=False) / catalog.TOKENIZER_FILE
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(path)),
        eos_token=catalog.EOS,
        pad_token=catalog.EOS,
        bos_token=catalog.EOS,
        clean_up_tokenization_spaces=False,
    )


def builtin_tokens(name: str = "pycode", split: str = "train") -> torch.Tensor:
    """The 1-D LongTensor token stream of ``split`` (files sorted, each followed by catalog.EOS).

    Cached as uint16 ``.npy`` under ``<cache>/tokens/``, keyed by the tokenizer's sha256 and the
    stdlib fingerprint, so only the first call tokenises (~seconds); later calls just load.
    """
    from tokenizers import Tokenizer

    catalog.check_name(name)
    files = catalog.split_files(split)
    tok_path = _resolve(name, need_model=False) / catalog.TOKENIZER_FILE
    key = f"{catalog.sha256_file(tok_path)[:16]}-{catalog.stdlib_fingerprint()[:16]}"
    path = catalog.cache_dir() / "tokens" / f"{name}-{split}-{key}.npy"
    if not path.is_file():
        arr = encode_files(Tokenizer.from_file(str(tok_path)), files)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, path)
    return torch.from_numpy(np.load(path).astype(np.int64))


def _usable(directory: Path, fingerprint: str, need_model: bool) -> tuple[bool, str]:
    """Whether ``directory`` holds a build for this stdlib (and a model if needed), and if not, why."""
    man = catalog.read_manifest(directory)
    if man is None or not (directory / catalog.TOKENIZER_FILE).is_file():
        return False, f"no built-in assets in {directory}"
    if man.get("stdlib_fingerprint") != fingerprint:
        return False, (
            f"the assets in {directory} were built from the standard library of Python "
            f"{man.get('python_version')} (fingerprint {str(man.get('stdlib_fingerprint'))[:12]}), but this "
            f"interpreter (Python {platform.python_version()}) has fingerprint {fingerprint[:12]}"
        )
    if need_model and (man.get("model") is None or not (directory / catalog.MODEL_FILE).is_file()):
        return False, f"the build in {directory} has a tokenizer but no trained model yet"
    return True, ""


def _resolve(name: str, need_model: bool) -> Path:
    """The directory holding a build that matches this interpreter's stdlib: the shipped assets if
    they match, else the cache build (reused, or built now). Falling back is always a WARNING,
    because it means slower start-up and a model that differs from the documented one."""
    catalog.check_name(name)
    fingerprint = catalog.stdlib_fingerprint()
    ok, why = _usable(catalog.ASSETS_DIR, fingerprint, need_model)
    if ok:
        return catalog.ASSETS_DIR
    out = catalog.cache_dir() / "builtin" / name
    with _build_lock(out):
        cached, cache_why = _usable(out, fingerprint, need_model)
        if cached:
            logger.warning(
                "builtin:%s: not using the shipped assets: %s. Using the matching cache build in %s.", name, why, out
            )
        else:
            what = "model (5-10 min on 2 CPU cores)" if need_model else "tokenizer (seconds)"
            logger.warning(
                "builtin:%s: not using the shipped assets: %s. Building the %s into %s (%s).",
                name,
                why,
                what,
                out,
                cache_why,
            )
            build(out, with_model=need_model, reuse_tokenizer=True)
    return out


@contextlib.contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    """Serialise builds into one directory (e.g. several Ray trials starting at once)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock, builds are still written atomically
        yield
        return
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def builtin_model_path(name: str = "pycode") -> Path:
    """Path of the built-in checkpoint (a :func:`e2e_sae.native_lm.save_native_lm` file) for this interpreter."""
    return _resolve(name, need_model=True) / catalog.MODEL_FILE
