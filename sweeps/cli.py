"""``python -m sweeps plan | run | resume | status | report | analyse``.

``run`` calls ``ray.init()`` with no address, which honours ``RAY_ADDRESS``: the same command runs a
local Ray on a laptop and joins the cluster under ``ray job submit``. Everything that can be
checked (sweep file, every trial's run config, the model's layers, the storage path, an existing
experiment of that name) is checked before Ray starts; whether the storage path survives the driver
and is reachable from every node (sweeps/experiment.py) is checked as soon as Ray is connected, before
anything is written or any trial starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from e2e_sae.config import ConfigError
from e2e_sae.metric_names import SWEEP_STATUS
from sweeps import experiment as layout
from sweeps.experiment import is_remote, local_copy, storage_uri
from sweeps.planning.spec import (
    SweepSpec,
    base_run_dict,
    config_diff,
    expand_trials,
    group_key,
    load_sweep,
    sweep_from_dict,
    trial_names,
    validate_trials,
)
from sweeps.planning.trial import Trial, members_of

# sweeps.reporting.report is imported inside the functions that need it: importing it here would load numpy for `plan`.


# ---- helpers -------------------------------------------------------------------------------------


def _prepare(path: str, set_items: list[str] | None) -> tuple[SweepSpec, list[Trial]]:
    spec = load_sweep(path, set_items)
    trials = expand_trials(spec)
    validate_trials(spec, trials)
    if spec.group_size > 1 and spec.search.kind == "grid":
        from sweeps.running.grouped_trial import member_run_configs

        for config in _tune_trials(spec, trials)[1]:  # the library's own check of every group
            member_run_configs(config, Path(spec.experiment_path))
    return spec, trials


def _group_wandb(spec: SweepSpec) -> dict[str, Any] | None:
    """The W&B settings a grouped trial's members log with (a W&B run each, in the sweep's group)."""
    if spec.wandb.mode == "disabled":
        return None
    return {"project": spec.wandb.project, "entity": spec.wandb.entity, "mode": spec.wandb.mode, "group": spec.name}


def _tune_trials(spec: SweepSpec, trials: list[Trial]) -> tuple[list[str], list[dict[str, Any]]]:
    """A grid's Tune trials: names and configs; one per planned trial, or grouped (group_size > 1)."""
    names = trial_names(trials)
    if spec.group_size == 1:
        return names, [t.tune_config() for t in trials]
    from sweeps.running.grouped_trial import plan_groups

    configs = plan_groups(trials, names, spec.group_size, _group_wandb(spec))
    return [c["name"] for c in configs], configs


def _experiment_exists(exp_path: str) -> bool:
    from ray.tune import Tuner

    if is_remote(exp_path):
        return Tuner.can_restore(exp_path)
    return Path(exp_path).exists() and any(Path(exp_path).iterdir())


def _write_sweep_file(spec: SweepSpec, trials: list[Trial], exp_path: str) -> None:
    """The validated spec, with the model name the report shows, next to Tune's files."""
    doc = spec.model_dump(mode="json", exclude={"group_size"} if spec.group_size == 1 else None)  # as before groups
    doc["run"], doc["base"] = base_run_dict(spec), None  # self-contained: resumable on another machine
    doc["model"] = trials[0].planned_run["model"].get("name") or "native (random init)"
    if spec.search.kind == "frontier":  # the searcher decides how many; record the groups and the budget
        doc["n_groups"], doc["max_trials"] = len(trials), len(trials) * spec.search.budget
    else:
        doc["n_trials"] = len(trials)
    layout.write_sweep_file(exp_path, yaml.safe_dump(doc, sort_keys=False))


def _read_sweep_file(exp_path: str, shown: str | None = None) -> SweepSpec:
    """The spec saved by ``run``; ``shown`` names the experiment in errors (default ``exp_path``)."""
    raw = layout.read_sweep_file(exp_path, shown)
    for key in ("model", "n_trials", "n_groups", "max_trials"):
        raw.pop(key, None)
    return sweep_from_dict(raw)


def _wandb_env(spec: SweepSpec) -> None:
    # Ray's W&B callback skips its API-key check only when WANDB_MODE is set in the environment.
    # An explicit WANDB_MODE in the environment may still turn an online sweep offline.
    if spec.wandb.mode == "online":
        os.environ.setdefault("WANDB_MODE", "online")
    else:
        os.environ["WANDB_MODE"] = spec.wandb.mode


def _tune_run_config(spec: SweepSpec):
    from ray import tune
    from ray.tune import Callback

    callbacks: list[Callback] = []
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
        progress_reporter=_status_table(),
        verbose=1,
    )


def _status_table():
    """The live table: the sweep's axes and headline metrics. Tune's default shows the grid index and
    the first metrics of a row (``ce_loss_original``, the same in every trial). Tune's newer output
    engine ignores a ``progress_reporter``; ``_fit`` selects the one that uses it (RAY_AIR_NEW_OUTPUT=0)."""
    from ray.tune import CLIReporter

    return CLIReporter(
        parameter_columns={"mode": "mode", "layer": "layer", "sparsity_coeff": "coeff"},
        metric_columns={"n_samples": "samples", "l0": "L0", "ce_loss_increase": "CE increase"},
        max_report_frequency=30,
        sort_by_metric=False,
    )


def _tune_config(spec: SweepSpec, trials: list[Trial]):
    from ray import tune

    if spec.search.kind == "frontier":
        from sweeps.planning.target_search import build_groups, total_budget
        from sweeps.running.searcher import FrontierSearcher, frontier_search_alg

        groups, templates = build_groups(spec)
        search_name = _SearchTrialName()
        searcher = FrontierSearcher(groups, templates, spec.group_size, _group_wandb(spec))
        # num_samples is the total budget; Tune stops earlier when the searcher returns FINISHED. The
        # searcher limits concurrency itself (sweeps/running/searcher.py: so that resumed trials reach it).
        return tune.TuneConfig(
            search_alg=frontier_search_alg(searcher, spec.max_concurrent_trials),
            num_samples=total_budget(spec),
            trial_name_creator=search_name,
            trial_dirname_creator=search_name,
        )
    name = _TrialName(_tune_trials(spec, trials)[0])
    return tune.TuneConfig(
        max_concurrent_trials=spec.max_concurrent_trials, trial_name_creator=name, trial_dirname_creator=name
    )


class _SearchTrialName:
    """A frontier-search trial's name: the name of its config's trial (``e2e_L1_r8_s0.7413_seed0``), or a
    grouped trial's own (its group and coefficients). Unique: the searcher never proposes coefficients
    within 1% of each other in a group, and 4 significant digits tell apart any two that are 1% apart;
    a retried start carries ``_retry<n>``."""

    def __call__(self, trial) -> str:
        from sweeps.running.searcher import trial_label

        return trial_label(trial.config)


class _TrialName:
    """Tune trial name and directory: the name ``plan`` prints (``e2e_L1_r8_s2_seed0``), not
    ``run_trial_8f6c7_00007_7_trial_index=7_<date>``. Picklable: it is saved in the experiment."""

    def __init__(self, names: list[str]):
        self.names = names

    def __call__(self, trial) -> str:
        return self.names[trial.config["trial_index"]]


class _DropTuneHints(logging.Filter):
    """Drops the two messages Tune logs when a run ends early: its resume hint (``Tuner.restore(...)``,
    which a user of this CLI should not call; ``_fit`` prints ``python -m sweeps resume``) and one
    ``FileNotFoundError`` line per trial that has no results yet (the report lists those trials)."""

    PREFIXES = ("Experiment has been interrupted", "Failed to fetch metrics")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


_TUNE_LOGGERS = ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C


def _fit(tuner, exp_path: str, n_trials: int | None) -> bool:
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
        import signal

        import ray

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the state is saved: a further Ctrl-C must not cut the line below
        ray.shutdown()  # workers' last log lines print now, not after the line below
        print(
            f"\ninterrupted; finished trials and checkpoints are kept in {exp_path}\n"
            f"continue with: python -m sweeps resume {exp_path}",
            flush=True,
        )
    return finished


def _trainable(spec: SweepSpec):
    from ray import tune

    from sweeps.running.trainable import run_trial

    res = {"cpu": spec.resources_per_trial.cpu, "gpu": spec.resources_per_trial.gpu}  # per group when grouped
    return tune.with_resources(run_trial, res)


def _init_ray() -> None:
    import ray

    if not ray.is_initialized():
        # No address: RAY_ADDRESS (set by `ray job submit` or the user) picks the cluster, else local.
        ray.init(log_to_driver=True)


def _finish(spec: SweepSpec, exp_path: str) -> int:
    from sweeps.reporting.report import write_report
    from sweeps.reporting.results import load_trials
    from sweeps.reporting.wandb_upload import log_report_to_wandb

    local = local_copy(exp_path)
    trials = load_trials(local)
    print()
    _print_table(trials)
    report = write_report(
        local, None if local == exp_path else layout.default_report_dir(exp_path, spec.name), trials=trials
    )
    print(f"report: {report}")
    if spec.wandb.mode != "disabled":
        log_report_to_wandb(report.parent, spec.wandb.project, spec.name, spec.wandb.entity, spec.wandb.mode)
    return 0


def _print_table(trials) -> None:
    from collections import Counter

    counts = Counter(t.state for t in trials)
    print("trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    header = f"{'trial':<44} {'state':<10} " + " ".join(f"{k:>20}" for k in SWEEP_STATUS)
    print(header)
    for t in sorted(trials, key=lambda t: (str(t.hook), str(t.mode), float(t.sparsity_coeff or 0))):
        cells = " ".join(f"{_fmt(t.metrics.get(k)):>20}" for k in SWEEP_STATUS)
        print(f"{t.trial_id:<44} {t.state:<10} {cells}")  # the trial directory's name


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ---- commands ------------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    spec, trials = _prepare(args.file, args.set)
    base = base_run_dict(spec)
    if spec.search.kind == "frontier":
        from sweeps.planning.target_search import plan_lines

        print(f"sweep {spec.name}: frontier search -> {spec.experiment_path}")
        print(f"resources per {_unit(spec)}: cpu={spec.resources_per_trial.cpu:g} gpu={spec.resources_per_trial.gpu:g}")
        print("\n".join(plan_lines(spec)))
        if spec.group_size > 1:
            print(f"group_size {spec.group_size}: up to {spec.group_size} proposals of a group train as one Tune trial")
        print("groups (their run config; the search sets loss.sparsity.coeff):")
        for t in trials:
            diff = config_diff(base, t.planned_run)
            for key in ("wandb.mode", "loss.sparsity.coeff"):
                diff.pop(key, None)
            print(f"    {group_key(t):<36} " + " ".join(f"{k}={v}" for k, v in diff.items()))
        return 0
    names, configs = _tune_trials(spec, trials)
    groups = f" in {len(configs)} groups of at most {spec.group_size}" if spec.group_size > 1 else ""
    print(f"sweep {spec.name}: {len(trials)} trials{groups} -> {spec.experiment_path}")
    print(f"resources per {_unit(spec)}: cpu={spec.resources_per_trial.cpu:g} gpu={spec.resources_per_trial.gpu:g}")
    if spec.group_size == 1:
        blocks = [(None, list(zip(names, configs, strict=True)))]
    else:
        blocks = [(c["name"], members_of(c)) for c in configs]
    index = {name: i for i, name in enumerate(trial_names(trials))}
    for group, members in blocks:
        if group is not None:
            print(f"group {group} (one Tune trial):")
        for name, member in members:
            diff = config_diff(base, member["run"])
            diff.pop("wandb.mode", None)
            print(f"{index[name]:>3} {name:<40} " + " ".join(f"{k}={v}" for k, v in diff.items()))
    return 0


def _unit(spec: SweepSpec) -> str:
    return "group (one Tune trial)" if spec.group_size > 1 else "trial"


def cmd_run(args: argparse.Namespace) -> int:
    from ray import tune

    spec, trials = _prepare(args.file, args.set)
    exp_path = spec.experiment_path
    layout.check_placement(spec.storage_path, layout.job_placement(), spec.storage_shared)  # before Ray starts
    if _experiment_exists(exp_path):
        raise ConfigError(
            f"experiment {exp_path} already exists; continue it with `python -m sweeps resume {exp_path}` "
            f"or pick a new name (--set name=...); nothing was overwritten"
        )
    _wandb_env(spec)
    _init_ray()
    layout.check_placement(spec.storage_path, layout.cluster_placement(), spec.storage_shared)  # nodes known now
    _write_sweep_file(spec, trials, exp_path)
    tuner = tune.Tuner(
        _trainable(spec),
        param_space={} if spec.search.kind == "frontier" else _param_space(_tune_trials(spec, trials)[1]),
        tune_config=_tune_config(spec, trials),
        run_config=_tune_run_config(spec),
    )
    return _fit_and_finish(tuner, spec, exp_path, _n_trials(spec, trials))


def _n_trials(spec: SweepSpec, trials: list[Trial]) -> int | None:
    """The grid's Tune trial count (groups, when grouped); None for a frontier search (it ends when
    its searcher says so)."""
    return None if spec.search.kind == "frontier" else len(_tune_trials(spec, trials)[1])


def _fit_and_finish(tuner, spec: SweepSpec, exp_path: str, n_trials: int | None) -> int:
    """Say where the results go before Tune prints anything, and again as the last line: the resume
    command after a Ctrl-C, else the experiment and its commands, whatever else happens."""
    print("\n".join(layout.where_lines(exp_path)), flush=True)
    interrupted = False
    try:
        interrupted = not _fit(tuner, exp_path, n_trials)
        return EXIT_INTERRUPTED if interrupted else _finish(spec, exp_path)
    finally:
        if not interrupted:
            print(layout.where_line(exp_path), flush=True)


def _param_space(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """One grid axis over Tune trial indices; every other key is derived from it, so params.json is flat."""
    from ray import tune

    space: dict[str, Any] = {"trial_index": tune.grid_search(list(range(len(configs))))}
    for key in configs[0]:
        space[key] = tune.sample_from(_pick(configs, key))
    return space


class _pick:
    """``sample_from`` callable: ``key`` of the Tune trial config the grid index selects (picklable)."""

    def __init__(self, configs: list[dict[str, Any]], key: str):
        self.values = [c[key] for c in configs]

    def __call__(self, config) -> Any:
        return self.values[config["trial_index"]]


def cmd_resume(args: argparse.Namespace) -> int:
    from ray.tune import Tuner

    layout.check_placement(args.path, layout.job_placement(), args.storage_shared, resume=True)  # before any read
    exp_path = storage_uri(args.path)
    spec = _read_sweep_file(exp_path)
    if not Tuner.can_restore(exp_path):
        raise ConfigError(f"{exp_path}: no Tune experiment state to restore; start it with `python -m sweeps run`")
    _wandb_env(spec)
    _init_ray()
    layout.check_placement(
        args.path, layout.cluster_placement(), spec.storage_shared or args.storage_shared, resume=True
    )
    # Finished trials stay finished; interrupted and errored ones continue from their checkpoints.
    # param_space again: Tune cannot unpickle sample_from functions for trials not yet created.
    # A frontier search's searcher (and its state, saved in the experiment) comes back with the Tuner.
    trials = expand_trials(spec)
    space = {} if spec.search.kind == "frontier" else _param_space(_tune_trials(spec, trials)[1])
    tuner = Tuner.restore(
        exp_path, trainable=_trainable(spec), resume_unfinished=True, resume_errored=True, param_space=space
    )
    return _fit_and_finish(tuner, spec, exp_path, _n_trials(spec, trials))


def cmd_status(args: argparse.Namespace) -> int:
    from sweeps.reporting.results import load_trials

    local = local_copy(args.path)
    trials = load_trials(local)
    _print_table(trials)
    if (Path(local) / layout.SWEEP_FILE).is_file():
        spec = _read_sweep_file(local, shown=args.path)
        if spec.search.kind == "frontier":
            from sweeps.planning.target_search import status_lines

            print()
            print("\n".join(status_lines(spec, trials)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sweeps.reporting.report import write_report
    from sweeps.reporting.wandb_upload import log_report_to_wandb

    local = local_copy(args.path)
    out = args.out or (None if local == args.path else layout.REPORT_DIR)
    report = write_report(local, out)
    print(f"report: {report}")
    if args.wandb:
        spec = _read_sweep_file(local, shown=args.path)  # the copy local_copy made of a remote one
        log_report_to_wandb(
            report.parent,
            spec.wandb.project,
            spec.name,
            spec.wandb.entity,
            os.environ.get("WANDB_MODE", spec.wandb.mode),
        )
    return 0


def cmd_analyse(args: argparse.Namespace) -> int:
    from sweeps.analysis.analyse import analyse_experiment

    index = analyse_experiment(args.path, args.out, args.trials)
    print(f"feature browser: {index}")
    print(f"geometry: {index.parent / 'analysis.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps", description="Ray Tune sweeps of e2e_sae runs")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in [
        ("plan", "print the expanded trial table; starts nothing"),
        ("run", "run every trial of a sweep file with Ray Tune"),
    ]:
        p = sub.add_parser(name, help=help_)
        p.add_argument("file", help="sweep YAML")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a sweep-file field (YAML value)")
    p = sub.add_parser("resume", help="continue an interrupted sweep from its experiment directory")
    p.add_argument("path")
    p.add_argument(
        "--storage-shared",
        action="store_true",
        help="PATH is on a filesystem every node of the cluster mounts (as storage_shared: true)",
    )
    p = sub.add_parser("status", help="trials by state with their latest metrics")
    p.add_argument("path")
    p = sub.add_parser("report", help="Pareto report of an experiment directory")
    p.add_argument("path")
    p.add_argument(
        "--out",
        default=None,
        help=f"output directory (default: PATH/{layout.REPORT_DIR}; ./{layout.REPORT_DIR} for s3:// or gs:// paths)",
    )
    p.add_argument("--wandb", action="store_true", help="also upload the report to the sweep's W&B group")
    p = sub.add_parser("analyse", help="feature browser and decoder geometry of the frontier SAEs")
    p.add_argument("path")
    p.add_argument(
        "--out", default=None, help=f"output directory, must not exist (default: PATH/{layout.ANALYSIS_DIR})"
    )
    p.add_argument(
        "--trials",
        nargs="+",
        metavar="NAME",
        help="analyse these trials (directory names) instead of, per hook and mode, the frontier SAE "
        "nearest the matched level",
    )
    args = parser.parse_args(argv)
    commands = {
        "plan": cmd_plan,
        "run": cmd_run,
        "resume": cmd_resume,
        "status": cmd_status,
        "report": cmd_report,
        "analyse": cmd_analyse,
    }
    try:
        return commands[args.command](args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
