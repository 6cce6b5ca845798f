"""A sweep with fine-tune stages on Ray Tune: one searcher that runs the main trials (the grid's, or
the target search's) and starts each finished trial's fine-tunes as soon as it finishes.

Ray Tune has no notion of a trial that starts from another trial's checkpoint. Here a searcher makes
it: when a trial completes, :class:`StagedSearcher` queues its children
(:func:`sweeps.planning.finetune_stage.children`) and hands them out before any further main trial;
each child fetches its parent's last checkpoint from the experiment's storage when it starts
(:func:`fetch_parent`). Children are Tune trials like any other: scheduled, retried from their own
checkpoints, resumed. The searcher's state (its queue, what it started) is saved with Tune's
experiment state, so a resumed sweep re-runs neither finished parents nor finished children; a parent
that errored has no children (``status`` lists them as skipped), unless a resume re-runs it to the end:
then a ``parents: all`` stage fine-tunes it as it finishes, and ``parents: frontier`` stages draw the
frontiers again once every main trial re-run has ended.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from e2e_sae.metric_names import EVAL_METRICS
from sweeps.planning.finetune_stage import FinetuneStage, children, frontier_children, parents_of
from sweeps.planning.trial import Trial, is_group, members_of
from sweeps.running.persisted import checkpoint_dirs
from sweeps.running.searcher import SelfLimitingSearcher, trial_label

PARENT_DIR = "parent"  # in a child's scratch directory: its parent's last checkpoint
# StagedSearcher's state saved with Tune's experiment state (and its base searcher's, as "base")
_SAVED = ("base_done", "queue", "configs", "child_ids", "spawned", "released", "held", "running", "errored", "stages")


class GridSearcher(Searcher):
    """A grid's Tune trials in plan order, as a searcher (so that a staged sweep has one searcher)."""

    def __init__(self, configs: list[dict[str, Any]]):
        super().__init__(metric=None, mode=None)
        self.configs, self.next = configs, 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        if self.next >= len(self.configs):
            return Searcher.FINISHED
        self.next += 1
        return self.configs[self.next - 1]

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"configs": self.configs, "next": self.next}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.configs, self.next = state["configs"], state["next"]


class StagedSearcher(SelfLimitingSearcher):
    """The main trials from ``base`` (a :class:`GridSearcher` or the target search's searcher), and
    every finished trial's children (``stages``), each queued the moment its parent completes and
    started before further main trials. Limits concurrency itself (``set_max_concurrency``), as the
    target search's searcher does, so that resumed trials' results reach it."""

    def __init__(self, base: Searcher, stages: list[FinetuneStage]):
        super().__init__()
        self.base, self.stages = base, stages
        self.base_done = False
        self.queue: list[dict[str, Any]] = []  # children whose parent finished, not yet started
        self.configs: dict[str, dict[str, Any]] = {}  # Tune trial id -> its config
        self.child_ids: set[str] = set()
        self.spawned: set[str] = set()  # children's names: a parent completing twice queues them once
        self.errored: set[str] = set()
        self.held: list[tuple[Trial, str]] = []  # finished main trials, for parents: frontier stages
        self.released = False  # whether the frontier stages' children were queued

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        if self.at_limit():
            return None
        if not self.queue and not self.base_done:
            proposed = self.base.suggest(trial_id)
            if proposed == Searcher.FINISHED:
                self.base_done = True
            elif isinstance(proposed, dict):
                return self._start(trial_id, proposed)
            else:
                return None
        if self.base_done and not self.released and not self.running - self.child_ids:
            self.released = True  # every main trial has ended: the frontiers are known
            self._queue(frontier_children(self.stages, self.held))
        if self.queue:
            self.child_ids.add(trial_id)
            return self._start(trial_id, self.queue.pop(0))
        return Searcher.FINISHED if not self.running else None

    def _queue(self, configs: list[dict[str, Any]]) -> None:
        for child in configs:
            name = trial_label(child)
            if name not in self.spawned:
                self.spawned.add(name)
                self.queue.append(child)

    def _start(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any]:
        self.configs[trial_id] = config
        self.running.add(trial_id)
        return config

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self.configs:
            return
        self.running.discard(trial_id)
        if trial_id not in self.child_ids:
            self.base.on_trial_complete(trial_id, result, error)
        (self.errored.add if error else self.errored.discard)(trial_id)
        if error or not result:
            return
        config = self.configs[trial_id]
        prefix: dict[str | None, str] = {None: ""}
        if is_group(config):
            prefix = {name: f"members/{name}/" for name, _ in members_of(config)}
        # Tune hands the result flattened: a member's metrics are members/<name>/<metric>
        finished = {name for name, p in prefix.items() if result.get(f"{p}final") is True}
        if not finished:
            return
        members = None if not is_group(config) else {str(name) for name in finished}
        self._queue(children(self.stages, config, trial_label(config), members))
        if trial_id not in self.child_ids:
            for parent in parents_of(config, members):
                p = prefix[parent.member]
                parent.metrics = {k: result.get(f"{p}{k}") for k in EVAL_METRICS}  # what the report's frontier reads
                self.held.append((parent, trial_label(config)))

    def save(self, checkpoint_path: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            base_file = os.path.join(tmp, "base.pkl")
            self.base.save(base_file)
            base_state = Path(base_file).read_bytes()
        state = {k: getattr(self, k) for k in _SAVED}
        state["base"] = base_state
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        """The saved state; every errored trial running again (``sweeps resume`` re-runs it under its
        id; its children are queued if it now finishes). A main trial running again reopens the
        ``parents: frontier`` choice: once it has ended the frontiers are drawn again, and parents now on
        them get their children (those already started are not started again; a parent that has dropped
        off keeps the children it had)."""
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        with tempfile.TemporaryDirectory() as tmp:
            base_file = os.path.join(tmp, "base.pkl")
            Path(base_file).write_bytes(state.pop("base"))
            self.base.restore(base_file)
        for key, value in state.items():
            setattr(self, key, value)
        if self.errored - self.child_ids:
            self.released = False
        self.running |= self.errored
        self.errored = set()


def fetch_parent(config: dict[str, Any], storage, into: Path) -> dict[str, Any]:
    """A child's config with ``finetune.parent`` set to its parent's last checkpoint, copied from the
    experiment's storage (``storage``: Tune's storage context; local or cloud) into ``into``, and
    ``finetune.copied_from`` to that checkpoint as stored, which the child's metrics record as its
    ``finetune_parent`` (``into`` is deleted when the trial ends)."""
    import pyarrow.fs

    finetune = config["finetune"]
    fs, trial_dir = storage.storage_filesystem, f"{storage.experiment_fs_path}/{finetune['parent_trial']}"
    checkpoints = checkpoint_dirs(fs, trial_dir)
    if not checkpoints:
        raise RuntimeError(f"fine-tune {trial_label(config)}: its parent {trial_dir} has no checkpoint in the storage")
    source = checkpoints[-1] + (f"/{finetune['member']}" if finetune.get("member") else "")
    into.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(source, str(into), source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem())
    finetune_run = {**config["run"]["finetune"], "parent": str(into), "copied_from": storage_uri(fs, source)}
    return {**config, "run": {**config["run"], "finetune": finetune_run}}


def storage_uri(fs, path: str) -> str:
    """``path`` on the pyarrow filesystem ``fs`` as one string that names it: the path itself on a local
    (or mounted: NFS) filesystem, ``s3://...`` / ``gs://...`` in a bucket."""
    kind = fs.type_name
    if kind == "local":
        return path
    scheme = {"gcs": "gs"}.get(kind, kind)
    return f"{scheme}://{path}" if scheme.isalnum() else path
