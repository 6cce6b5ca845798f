"""Token streams of fixed ``n_ctx`` chunks, in a deterministic order that resumes exactly.

Sources (``DataSource.name``):
- ``builtin:pycode``: the built-in corpus (``e2e_sae.builtin``), split ``train`` or ``eval``;
- a local ``.txt``/``.jsonl``/``.json``/``.parquet`` file or a directory of such files, or a
  ``datasets.save_to_disk`` directory;
- an HF hub dataset name (streamed by default), pre-tokenised (``input_ids``) or raw ``text``.

Rows are concatenated (raw text separated by EOS) and cut into ``n_ctx`` chunks, so pre-tokenised
rows of exactly ``n_ctx`` tokens pass through unchanged. The position in the stream is a small dict
(``state()``) saved in checkpoints; ``restore(state)`` continues from exactly the same sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from e2e_sae.builtin.assets import builtin_tokens
from e2e_sae.builtin.catalog import parse_name
from e2e_sae.config import ConfigError, DataSource

_LOCAL_FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def is_builtin(source: DataSource) -> bool:
    return parse_name(source.name) is not None


def check_source_exists(source: DataSource, field: str) -> None:
    """Fail before any compute when a local path is missing (HF names are checked on load)."""
    if is_builtin(source):
        if source.split not in ("train", "eval"):
            raise ConfigError(f"{field}.split: builtin corpora have splits 'train' and 'eval', got {source.split!r}")
        return
    if source.name.startswith(("/", "./", "../", "~")) and not Path(source.name).expanduser().exists():
        raise ConfigError(f"{field}.name: dataset path {source.name} does not exist; fix the path")


# ---- loading rows --------------------------------------------------------------------------------


def _load_hf(source: DataSource):
    """A ``datasets`` Dataset or IterableDataset for a local path or hub name."""
    import datasets

    path = Path(source.name).expanduser()
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(path))
        return ds[source.split] if isinstance(ds, datasets.DatasetDict) else ds
    if path.exists():
        files = sorted(p for p in path.rglob("*") if p.suffix in _LOCAL_FORMATS) if path.is_dir() else [path]
        if not files:
            raise ConfigError(f"data source {source.name}: no .txt/.jsonl/.json/.parquet files found")
        builder = _LOCAL_FORMATS.get(files[0].suffix)
        if builder is None:
            raise ConfigError(f"data source {source.name}: unsupported file type {files[0].suffix}")
        return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    return datasets.load_dataset(source.name, split=source.split, streaming=source.streaming)


def _row_tokens(row: dict[str, Any], column: str, tokenizer) -> list[int]:
    value = row[column]
    if column == "text":
        ids = tokenizer(value)["input_ids"]
        eos = tokenizer.eos_token_id
        return list(ids) + ([eos] if eos is not None else [])
    return list(value)


def _pick_column(source: DataSource, column_names: list[str] | None) -> str:
    if source.column:
        return source.column
    if column_names and "input_ids" not in column_names and "text" in column_names:
        return "text"
    return "input_ids"


def is_raw_text(source: DataSource) -> bool:
    """Whether a source's rows are text to tokenise (not ``input_ids``); builtin corpora are tokens."""
    if is_builtin(source):
        return False
    return _pick_column(source, _load_hf(source).column_names) == "text"


# ---- streams -------------------------------------------------------------------------------------


class TensorStream:
    """All chunks in memory ``[N, n_ctx]``; each epoch a fresh permutation from (seed, epoch).

    The position is just the number of samples served, so resuming is arithmetic.
    """

    def __init__(self, chunks: Tensor, seed: int):
        if len(chunks) == 0:
            raise ConfigError("data: the training source has fewer tokens than one n_ctx chunk")
        self.chunks, self.seed, self.position = chunks, seed, 0
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _order(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.chunks), generator=g)
        return self._perm

    def next_batch(self, batch_size: int) -> Tensor:
        idx = []
        for _ in range(batch_size):
            epoch, i = divmod(self.position, len(self.chunks))
            idx.append(self._order(epoch)[i])
            self.position += 1
        return self.chunks[torch.stack(idx)]

    def state(self) -> dict[str, Any]:
        return {"position": self.position}

    def restore(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


class RowStream:
    """Rows of an HF dataset (streamed or not), shuffled by seed, re-chunked to ``n_ctx``.

    The position is (rows consumed, leftover tokens): resuming skips the rows and restores the
    leftover, so the next chunk is the one an uninterrupted run would have seen.
    """

    def __init__(self, source: DataSource, n_ctx: int, seed: int, tokenizer, single_pass: bool = False):
        """``single_pass``: the rows in their stored order, once (a fixed eval set: no shuffle, no wrap)."""
        self.source, self.n_ctx, self.seed, self.tokenizer = source, n_ctx, seed, tokenizer
        self.rows_consumed, self.leftover = 0, torch.empty(0, dtype=torch.long)
        self.epoch = 0
        self.single_pass = single_pass
        self._rows: Iterator[dict[str, Any]] | None = None

    def _open(self) -> Iterator[dict[str, Any]]:
        import datasets

        ds = _load_hf(self.source)
        self.column = _pick_column(self.source, ds.column_names)
        if self.single_pass:
            return iter(ds)
        if isinstance(ds, datasets.IterableDataset):
            ds = ds.shuffle(seed=self.seed + self.epoch, buffer_size=self.source.shuffle_buffer)
        else:
            if self.rows_consumed >= len(ds):  # resumed exactly at the end of an epoch
                self.epoch, self.rows_consumed = self.epoch + 1, 0
            ds = ds.shuffle(seed=self.seed + self.epoch)
        return iter(ds.skip(self.rows_consumed) if self.rows_consumed else ds)

    def next_batch(self, batch_size: int) -> Tensor:
        need = batch_size * self.n_ctx
        parts, have = [self.leftover], len(self.leftover)
        while have < need:
            if self._rows is None:
                self._rows = self._open()
            try:
                row = next(self._rows)
            except StopIteration:  # next epoch, reshuffled; a fixed eval set never wraps around
                if self.single_pass:
                    raise ConfigError(
                        f"data.n_eval_samples: {self.source.name} has fewer than the requested tokens; lower it"
                    ) from None
                self.epoch, self.rows_consumed, self._rows = self.epoch + 1, 0, None
                continue
            self.rows_consumed += 1
            toks = torch.tensor(_row_tokens(row, self.column, self.tokenizer), dtype=torch.long)
            parts.append(toks)
            have += len(toks)
        flat = torch.cat(parts)
        self.leftover = flat[need:].clone()
        return flat[:need].view(batch_size, self.n_ctx)

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "rows_consumed": self.rows_consumed, "leftover": self.leftover}

    def restore(self, state: dict[str, Any]) -> None:
        self.epoch, self.rows_consumed = int(state["epoch"]), int(state["rows_consumed"])
        self.leftover, self._rows = state["leftover"].clone(), None


def builtin_chunks(source: DataSource, n_ctx: int) -> Tensor:
    builtin = parse_name(source.name)
    if builtin is None:
        raise ValueError(f"data: {source.name} is not a builtin: corpus; callers check is_builtin first")
    flat = builtin_tokens(builtin, source.split)
    n = len(flat) // n_ctx
    return flat[: n * n_ctx].view(n, n_ctx).long()


def open_train_stream(source: DataSource, n_ctx: int, seed: int, tokenizer) -> TensorStream | RowStream:
    if is_builtin(source):
        return TensorStream(builtin_chunks(source, n_ctx), seed)
    return RowStream(source, n_ctx, seed, tokenizer)


def load_eval_tokens(source: DataSource, n_ctx: int, n_samples: int, tokenizer) -> Tensor:
    """The fixed held-out eval set ``[n_samples, n_ctx]``: same tokens for every run and seed."""
    if is_builtin(source):
        chunks = builtin_chunks(source, n_ctx)
        if len(chunks) < n_samples:
            raise ConfigError(f"data.n_eval_samples: only {len(chunks)} eval chunks of n_ctx={n_ctx} exist; lower it")
        # Evenly spaced chunks cover the whole held-out split, not just its first files.
        idx = torch.linspace(0, len(chunks) - 1, n_samples).long()
        return chunks[idx]
    # unshuffled: the first rows of the eval split
    return RowStream(source, n_ctx, seed=0, tokenizer=tokenizer, single_pass=True).next_batch(n_samples)


def check_held_out(train: DataSource, eval: DataSource) -> None:
    """Evaluation never reads the training stream (a pitfall of the reference implementation)."""
    if train.name == eval.name and train.split == eval.split:
        raise ConfigError(
            f"data.eval: same source and split as data.train ({train.name}:{train.split}); "
            "use a held-out split (e.g. split: test) or a separate file"
        )
