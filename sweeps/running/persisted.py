"""The checkpoints Tune persisted in a trial's storage directory, read back on the trial's node.

A trial reports a checkpoint by copying it to ``<experiment>/<trial>/checkpoint_NNNNNN/`` and then
telling the driver; the driver records it in the experiment state it snapshots every few seconds.
Killed between the two (the driver SIGKILLed, the node lost), the restarted trial gets
``tune.get_checkpoint()`` from the last snapshot: an older checkpoint, or none. Resuming from that
alone trains again what the storage already holds, and Tune, counting checkpoints from the
snapshot's index, writes the new ones over the newer directories there. So a trial resumes from its
newest readable checkpoint in the storage and numbers its new ones after every one the storage holds,
and the driver's ``result.json`` continues the storage's copy (:class:`ResultLog`). Both read Ray's
``StorageContext`` (a DeveloperAPI; ray is pinned in pyproject.toml, tests/test_sweeps_ray.py runs them).
"""

from __future__ import annotations

from pathlib import Path

from ray.tune.logger import JsonLoggerCallback

CHECKPOINT_PREFIX = "checkpoint_"


def checkpoint_dirs(fs, trial_dir: str) -> list[str]:
    """``checkpoint_NNNNNN`` directories in ``trial_dir`` on the pyarrow filesystem ``fs``, oldest first."""
    import pyarrow.fs

    infos = fs.get_file_info(pyarrow.fs.FileSelector(trial_dir, allow_not_found=True))
    indexed = [(_index(i.base_name), i.path) for i in infos if i.type == pyarrow.fs.FileType.Directory]
    return [path for index, path in sorted((n, p) for n, p in indexed if n is not None)]


def _index(name: str) -> int | None:
    digits = name.removeprefix(CHECKPOINT_PREFIX)
    return int(digits) if name.startswith(CHECKPOINT_PREFIX) and digits.isdigit() else None


def readable(checkpoint_dir: Path, members: list[str]) -> bool:
    """Whether the library can resume from ``checkpoint_dir`` (each of ``members``' parts of it, for a
    group): a copy cut short leaves a missing or truncated ``checkpoint.pt``, which fails to open."""
    import torch

    from e2e_sae.run_dir import CHECKPOINT_FILE

    for part in [checkpoint_dir / m for m in members] or [checkpoint_dir]:
        try:
            torch.load(part / CHECKPOINT_FILE, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # missing, truncated or corrupt: any of them means "not this one"
            return False
    return True


def resume_point(storage, tune_checkpoint, into: Path, members: list[str]) -> Path | None:
    """Copy the checkpoint this attempt resumes from into ``into`` and return it (None: from the start).

    ``storage``: the trial's Tune storage context; ``tune_checkpoint``: ``tune.get_checkpoint()``.
    The newest readable checkpoint the trial's storage directory holds wins over Tune's (which is one
    of them, or older); with none readable, Tune's. Moves the storage context's checkpoint index past
    every directory there, so what this attempt reports never replaces what an earlier one persisted.
    """
    import shutil

    import pyarrow.fs

    fs, trial_dir = storage.storage_filesystem, storage.trial_fs_path
    dirs, local = checkpoint_dirs(fs, trial_dir), pyarrow.fs.LocalFileSystem()
    if dirs:
        storage.current_checkpoint_index = max(storage.current_checkpoint_index, _index(Path(dirs[-1]).name) or 0)
    for source in reversed(dirs):
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        pyarrow.fs.copy_files(source, str(into), source_filesystem=fs, destination_filesystem=local)
        if readable(into, members):
            return into
    shutil.rmtree(into, ignore_errors=True)
    if tune_checkpoint is None:
        return None
    tune_checkpoint.to_directory(str(into))
    return into


class ResultLog(JsonLoggerCallback):
    """Tune's ``result.json`` writer, continuing the storage's copy whenever this driver starts a trial
    it has no rows of yet (a resumed sweep), not only when Tune's snapshot holds a checkpoint for it.

    Tune's writer restores the storage's copy only for a trial with a checkpoint in the snapshot; for
    one without, it starts an empty file whose next sync replaces the storage's copy, so the rows of a
    trial killed after persisting checkpoints the snapshot missed were lost although the trial resumes
    from those checkpoints (:func:`resume_point`). And for a trial Tune restarts within one driver it
    copied the storage's copy, as of the last sync, over the driver's own newer file."""

    def _restore_from_remote(self, file_name: str, trial) -> None:
        import pyarrow.fs

        local = Path(trial.local_path, file_name)
        remote = f"{trial.storage.trial_fs_path}/{file_name}"
        fs = trial.storage.storage_filesystem
        if local.exists() or fs.get_file_info(remote).type != pyarrow.fs.FileType.File:
            return
        pyarrow.fs.copy_files(remote, str(local), source_filesystem=fs)
