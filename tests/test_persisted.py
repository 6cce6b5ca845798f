"""What a restarted trial resumes from: the newest readable checkpoint its storage directory holds,
even one Tune's experiment snapshot missed (the driver killed between the trial persisting it and
the next snapshot), and where its new checkpoints go; and the driver's result.json continuing the
storage's copy. Storage contexts here are plain objects over a local pyarrow filesystem, as Tune's
are for a local storage_path."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
import pytest
import torch

from e2e_sae.run_dir import CHECKPOINT_FILE
from sweeps.running.persisted import ResultLog, checkpoint_dirs, resume_point


def _storage(trial_dir: Path, index: int = -1) -> SimpleNamespace:
    trial_dir.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(
        storage_filesystem=pyarrow.fs.LocalFileSystem(), trial_fs_path=str(trial_dir), current_checkpoint_index=index
    )


def _checkpoint(trial_dir: Path, index: int, n_samples: int, parts: tuple[str, ...] = ("",)) -> Path:
    d = trial_dir / f"checkpoint_{index:06d}"
    for part in parts:
        (d / part).mkdir(parents=True, exist_ok=True)
        torch.save({"n_samples": n_samples, "sae": torch.arange(1000.0)}, d / part / CHECKPOINT_FILE)
    return d


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _n_samples(resumed: Path, part: str = "") -> int:
    return torch.load(resumed / part / CHECKPOINT_FILE, weights_only=True)["n_samples"]


def test_checkpoint_dirs_are_ordered_by_index_and_ignore_other_entries(tmp_path):
    for i in (10, 2, 0):
        _checkpoint(tmp_path, i, i)
    (tmp_path / "checkpoint_tmp").mkdir()
    (tmp_path / "result.json").write_text("")
    assert [Path(p).name for p in checkpoint_dirs(pyarrow.fs.LocalFileSystem(), str(tmp_path))] == [
        "checkpoint_000000",
        "checkpoint_000002",
        "checkpoint_000010",
    ]
    assert checkpoint_dirs(pyarrow.fs.LocalFileSystem(), str(tmp_path / "absent")) == []


def test_a_checkpoint_the_snapshot_missed_wins_and_new_ones_are_numbered_after_it(tmp_path):
    trial = tmp_path / "trial"
    storage = _storage(trial)  # Tune's snapshot knew no checkpoint: index -1, get_checkpoint() None
    _checkpoint(trial, 0, 128)
    _checkpoint(trial, 1, 256)
    resumed = resume_point(storage, None, tmp_path / "into", [])
    assert resumed is not None and _n_samples(resumed) == 256
    assert storage.current_checkpoint_index == 1  # Tune adds 1 before persisting: the next is checkpoint_000002


def test_a_checkpoint_cut_short_falls_back_to_the_one_before(tmp_path):
    trial = tmp_path / "trial"
    storage = _storage(trial, index=0)
    _checkpoint(trial, 0, 128)
    _truncate(_checkpoint(trial, 1, 256) / CHECKPOINT_FILE)
    resumed = resume_point(storage, None, tmp_path / "into", [])
    assert resumed is not None and _n_samples(resumed) == 128
    assert storage.current_checkpoint_index == 1  # still past the unreadable one: it is never written over


def test_a_group_checkpoint_missing_a_member_is_not_resumed_from(tmp_path):
    trial = tmp_path / "trial"
    storage = _storage(trial)
    _checkpoint(trial, 0, 128, parts=("a", "b"))
    _checkpoint(trial, 1, 256, parts=("a",))  # the copy ended before member b's part
    resumed = resume_point(storage, None, tmp_path / "into", ["a", "b"])
    assert resumed is not None and [_n_samples(resumed, m) for m in "ab"] == [128, 128]


def test_nothing_readable_resumes_from_tunes_checkpoint_or_from_the_start(tmp_path):
    trial = tmp_path / "trial"
    storage = _storage(trial, index=3)
    assert resume_point(storage, None, tmp_path / "into", []) is None
    assert storage.current_checkpoint_index == 3
    _truncate(_checkpoint(trial, 0, 128) / CHECKPOINT_FILE)
    assert resume_point(storage, None, tmp_path / "into", []) is None
    assert not (tmp_path / "into").exists()

    elsewhere = _checkpoint(tmp_path / "tune", 0, 64)
    tune_checkpoint = SimpleNamespace(to_directory=lambda d: shutil.copytree(elsewhere, d))
    resumed = resume_point(storage, tune_checkpoint, tmp_path / "into", [])
    assert resumed is not None and _n_samples(resumed) == 64


@pytest.mark.parametrize("local_rows", [None, "local\n"])
def test_result_log_continues_the_storage_copy_only_when_the_driver_has_none(tmp_path, local_rows):
    remote_dir, local_dir = tmp_path / "storage" / "trial", tmp_path / "staging" / "trial"
    remote_dir.mkdir(parents=True)
    local_dir.mkdir(parents=True)
    (remote_dir / "result.json").write_text("remote\n")
    if local_rows is not None:  # a trial Tune restarts within one driver: its own file is the newest
        (local_dir / "result.json").write_text(local_rows)
    trial = SimpleNamespace(local_path=str(local_dir), storage=_storage(remote_dir))
    ResultLog()._restore_from_remote("result.json", trial)
    assert (local_dir / "result.json").read_text() == (local_rows or "remote\n")
    ResultLog()._restore_from_remote("absent.json", trial)  # nothing in the storage: nothing copied
    assert not (local_dir / "absent.json").exists()
