"""A plan on Ray Tune: the Tuner of ``run`` and of ``resume``, its run config, search and live table.

``start`` and ``restore`` call ``ray.init()`` with no address, which honours ``RAY_ADDRESS``: the same
command runs a local Ray on a laptop and joins the cluster under ``ray job submit``. Ray is imported
inside the functions, so ``plan``, ``status`` and ``report`` never load it.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

from e2e_sae.architectures.spec import PENALISED, TOPK_FAMILY
from sweeps.experiment import is_remote, storage_uri
from sweeps.planning.plan import Plan, group_wandb
from sweeps.planning.spec import SweepSpec

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C
# A trial process trains the next trial (Tune resets it) instead of ending: each trial would otherwise
# import torch, TransformerLens and Ray again (about 5 s on a CPU core; on a GPU also a CUDA context),
# a tenth of a quickstart trial. Trials start from their config and checkpoint alone (trainable.py).
REUSE_ACTORS = True
_TUNE_LOGGERS = ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")


def experiment_exists(exp_path: str) -> bool:
    from ray.tune import Tuner

    if is_remote(exp_path):
        return Tuner.can_restore(exp_path)
    return Path(exp_path).exists() and any(Path(exp_path).iterdir())


def set_wandb_env(spec: SweepSpec) -> None:
    """Ray's W&B callback skips its API-key check only when WANDB_MODE is set in the environment; an
    explicit WANDB_MODE in the environment may still turn an online sweep offline."""
    if spec.wandb.mode == "online":
        os.environ.setdefault("WANDB_MODE", "online")
    else:
        os.environ["WANDB_MODE"] = spec.wandb.mode


def init_ray() -> None:
    import ray

    if not ray.is_initialized():
        # No address: RAY_ADDRESS (set by `ray job submit` or the user) picks the cluster, else local.
        ray.init(log_to_driver=True)


def new_tuner(plan: Plan):
    """The Tuner of ``sweeps run``: a grid's Tune trials as a grid over their indices, or the searcher."""
    from ray import tune

    return tune.Tuner(
        trainable(plan.spec),
        param_space=param_space(plan),
        tune_config=tune_config(plan),
        run_config=run_config(plan.spec),
    )


def restored_tuner(plan: Plan, exp_path: str):
    """The Tuner of ``sweeps resume``: finished trials stay finished; interrupted and errored ones
    continue from their checkpoints. ``param_space`` again: Tune cannot unpickle ``sample_from``
    functions for trials not yet created. A target search's searcher (and its state, saved in the
    experiment) comes back with the Tuner."""
    from ray.tune import Tuner

    return Tuner.restore(
        exp_path,
        trainable=trainable(plan.spec),
        resume_unfinished=True,
        resume_errored=True,
        param_space=param_space(plan),
    )


def n_tune_trials(plan: Plan) -> int | None:
    """A grid's Tune trial count (groups, when grouped); None for a target search or a sweep with
    fine-tune stages (they end when their searcher says so)."""
    return None if plan.is_search or plan.spec.finetune else len(plan.tune_trials)


def trainable(spec: SweepSpec):
    from ray import tune

    from sweeps.running.trainable import run_trial

    res = {"cpu": spec.resources_per_trial.cpu, "gpu": spec.resources_per_trial.gpu}  # per group when grouped
    return tune.with_resources(run_trial, res)


def param_space(plan: Plan) -> dict[str, Any]:
    """A grid: one axis over Tune trial indices; every other key is derived from it, so params.json is
    the trial's config as planned. A target search or a staged sweep: none (the searcher makes each config)."""
    if plan.is_search or plan.spec.finetune:
        return {}
    from ray import tune

    configs = plan.tune_trials
    space: dict[str, Any] = {"trial_index": tune.grid_search(list(range(len(configs))))}
    for key in configs[0]:
        space[key] = tune.sample_from(_Pick(configs, key))
    return space


class _Pick:
    """``sample_from`` callable: ``key`` of the Tune trial config the grid index selects (picklable)."""

    def __init__(self, configs: list[dict[str, Any]], key: str):
        self.values = [c[key] for c in configs]

    def __call__(self, config) -> Any:
        return self.values[config["trial_index"]]


def tune_config(plan: Plan):
    from ray import tune

    if plan.spec.finetune:
        return _staged_tune_config(plan)
    if plan.is_search:
        from sweeps.planning.target_search import total_budget

        # num_samples is the total budget; Tune stops earlier when the searcher returns FINISHED.
        return _searched_tune_config(plan, _target_searcher(plan), total_budget(plan))
    name = _GridTrialName(plan.tune_names)
    return tune.TuneConfig(
        max_concurrent_trials=plan.spec.max_concurrent_trials,
        trial_name_creator=name,
        trial_dirname_creator=name,
        reuse_actors=REUSE_ACTORS,
    )


def _target_searcher(plan: Plan):
    from sweeps.planning.target_search import build_curves, packable_curves
    from sweeps.running.searcher import TargetSearcher

    return TargetSearcher(
        build_curves(plan), plan.curves, plan.spec.group_size, group_wandb(plan.spec), packable_curves(plan)
    )


def _searched_tune_config(plan: Plan, searcher, num_samples: int):
    """Trials made by ``searcher``, at most ``num_samples`` of them. The searcher limits concurrency
    itself (sweeps/running/searcher.py: so that resumed trials reach it)."""
    from ray import tune

    from sweeps.running.searcher import target_search_alg

    return tune.TuneConfig(
        search_alg=target_search_alg(searcher, plan.spec.max_concurrent_trials),
        num_samples=num_samples,
        trial_name_creator=_SearchTrialName(),
        trial_dirname_creator=_SearchTrialName(),
        reuse_actors=REUSE_ACTORS,
    )


def _staged_tune_config(plan: Plan):
    """A sweep with fine-tune stages: one searcher runs the main trials (the grid's in plan order, or
    the target search's) and each finished trial's fine-tunes (:mod:`sweeps.running.stages`)."""
    from sweeps.planning.finetune_stage import children_per_parent
    from sweeps.planning.target_search import total_budget
    from sweeps.running.stages import GridSearcher, StagedSearcher

    if plan.is_search:
        base: Any = _target_searcher(plan)
        n_main = n_saes = total_budget(plan)  # proposals: SAEs, at most as many Tune trials
    else:
        named = [{**c, "name": c.get("name") or n} for c, n in zip(plan.tune_trials, plan.tune_names, strict=True)]
        base, n_main, n_saes = GridSearcher(named), len(named), len(plan.trials)
    searcher = StagedSearcher(base, plan.spec.finetune)
    # at most this many trials; the searcher ends the sweep
    return _searched_tune_config(plan, searcher, n_main + n_saes * children_per_parent(plan.spec.finetune))


class _SearchTrialName:
    """A target-search trial's name and directory (:func:`sweeps.running.searcher.trial_label`)."""

    def __call__(self, trial) -> str:
        from sweeps.running.searcher import trial_label

        return trial_label(trial.config)


class _GridTrialName:
    """Tune trial name and directory: the name ``plan`` prints (``e2e_L1_r8_s2_seed0``), not
    ``run_trial_8f6c7_00007_7_trial_index=7_<date>``. Picklable: it is saved in the experiment."""

    def __init__(self, names: list[str]):
        self.names = names

    def __call__(self, trial) -> str:
        return self.names[trial.config["trial_index"]]


def run_config(spec: SweepSpec):
    from ray import tune
    from ray.tune import Callback

    from sweeps.running.persisted import ResultLog

    callbacks: list[Callback] = [ResultLog()]  # Tune's result.json writer, continuing the storage's copy
    if spec.wandb.mode != "disabled" and spec.group_size == 1:  # grouped members log their own W&B runs
        from ray.air.integrations.wandb import WandbLoggerCallback

        # Never an api_key= here: it would be pickled into the experiment's tuner.pkl.
        callbacks.append(
            WandbLoggerCallback(
                project=spec.wandb.project,
                group=spec.name,
                entity=spec.wandb.entity,
                mode=spec.wandb.mode,
                resume="allow",
                excludes=["node_id"],
            )
        )
    return tune.RunConfig(
        name=spec.name,
        storage_path=storage_uri(spec.storage_path),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoints_per_trial),
        # A trial's artifacts (grouped members' W&B files, in its working directory: sweeps/running/trainable.py)
        # reach its storage directory from any node; with W&B off there are none and nothing is synced.
        sync_config=tune.SyncConfig(sync_artifacts=True),
        callbacks=callbacks,
        progress_reporter=_status_table(spec),
        verbose=1,
    )


def _status_table(spec: SweepSpec):
    """The live table: each Tune trial's name (its axes: ``e2e_L1_r8_s2_seed0``; a group's mode, layer
    and index, whose members ``plan`` lists), the axes that tell its rows apart (Tune's default would
    show the grid index) and the headline metrics. Tune's newer output engine ignores a
    ``progress_reporter``; :func:`fit` selects the one that uses it."""
    from ray.tune import CLIReporter

    return CLIReporter(
        parameter_columns=status_columns(spec),
        metric_columns={"n_samples": "samples", "l0": "L0", "ce_loss_increase": "CE increase"},
        max_report_frequency=30,
        sort_by_metric=False,
        max_column_length=100,  # a hook's name, a group's member names
    )


def status_columns(spec: SweepSpec) -> dict[str, str]:
    """Tune config keys -> the live table's headers: mode and hook; the architecture when the sweep has
    several; a trial's coefficient (and k in the topk family). A group's members differ in those two,
    so a grid group shows its members' names instead (a search's group name already lists them)."""
    grouped = spec.group_size > 1
    run = "members/0/run" if grouped else "run"
    columns = {f"{run}/mode": "mode", f"{run}/sae/position": "hook"}
    if len(spec.architectures) > 1:
        columns[f"{run}/sae/architecture"] = "architecture"
    if not grouped:
        if any(a in PENALISED for a in spec.architectures):
            columns["run/loss/sparsity/coeff"] = "coeff"
        if any(a in TOPK_FAMILY for a in spec.architectures):
            columns["run/sae/k"] = "k"
    elif spec.search.kind != "targets":
        columns["member_names"] = "members"
    return columns


class _DropTuneHints(logging.Filter):
    """Drops the two messages Tune logs when a run ends early: its resume hint (``Tuner.restore(...)``,
    which a user of this CLI should not call; :func:`fit` prints ``python -m sweeps resume``) and one
    ``FileNotFoundError`` line per trial that has no results yet (the report lists those trials)."""

    PREFIXES = ("Experiment has been interrupted", "Failed to fetch metrics")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


def fit(tuner, exp_path: str, n_trials: int | None) -> bool:
    """``tuner.fit()``; False when Ctrl-C (SIGINT) stopped it, after printing how to continue.

    A first Ctrl-C lets Tune save the experiment state and return early (its trials then count as
    terminated, and trials not yet created are missing: so "done" is every trial with its final row
    or an error); a second one raises KeyboardInterrupt in here. Either way ``sweeps resume`` goes on."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the output engine that shows _status_table
    hints = _DropTuneHints()
    for name in _TUNE_LOGGERS:
        logging.getLogger(name).addFilter(hints)
    try:
        grid = tuner.fit()
        finished = (n_trials is None or len(grid) == n_trials) and all(r.error or r.metrics.get("final") for r in grid)
    except KeyboardInterrupt:
        finished = False
    finally:
        for name in _TUNE_LOGGERS:
            logging.getLogger(name).removeFilter(hints)
    if not finished:
        import ray

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the state is saved: a further Ctrl-C must not cut the line below
        ray.shutdown()  # workers' last log lines print now, not after the line below
        print(
            f"\ninterrupted; finished trials and checkpoints are kept in {exp_path}\n"
            f"continue with: python -m sweeps resume {exp_path}",
            flush=True,
        )
    return finished
