"""``python -m sweeps plan | run | resume | status | report``.

``run`` calls ``ray.init()`` with no address, which honours ``RAY_ADDRESS``: the same command runs a
local Ray on a laptop and joins the cluster under ``ray job submit``. Everything that can be
checked (sweep file, every trial's run config, the model's layers, the storage path, an existing
experiment of that name) is checked before Ray starts; whether the storage path survives the driver
and is reachable from every node (sweeps/layout.py) is checked as soon as Ray is connected, before
anything is written or any trial starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from e2e_sae.config import ConfigError
from sweeps import layout
from sweeps.layout import is_remote, local_copy, storage_uri
from sweeps.spec import (
    SweepSpec, base_run_dict, config_diff, expand_trials, load_sweep, sweep_from_dict, trial_name, validate_trials,
)

# sweeps.report is imported inside the functions that need it: importing it here would load numpy for `plan`.
SUMMARY_KEYS = ("l0", "alive_dict_elements", "ce_loss_increase", "n_samples")


# ---- helpers -------------------------------------------------------------------------------------


def _prepare(path: str, set_items: list[str] | None) -> tuple[SweepSpec, list[dict[str, Any]]]:
    spec = load_sweep(path, set_items)
    trials = expand_trials(spec)
    validate_trials(spec, trials)
    return spec, trials


def _experiment_exists(exp_path: str) -> bool:
    from ray.tune import Tuner

    if is_remote(exp_path):
        return Tuner.can_restore(exp_path)
    return Path(exp_path).exists() and any(Path(exp_path).iterdir())


def _write_sweep_file(spec: SweepSpec, trials: list[dict[str, Any]], exp_path: str) -> None:
    """The validated spec, with the model name the report shows, next to Tune's files."""
    doc = spec.model_dump(mode="json")
    doc["run"], doc["base"] = base_run_dict(spec), None  # self-contained: resumable on another machine
    doc["model"] = trials[0]["run"]["model"].get("name") or "native (random init)"
    doc["n_trials"] = len(trials)
    layout.write_sweep_file(exp_path, yaml.safe_dump(doc, sort_keys=False))


def _read_sweep_file(exp_path: str, shown: str | None = None) -> SweepSpec:
    """The spec saved by ``run``; ``shown`` names the experiment in errors (default ``exp_path``)."""
    raw = layout.read_sweep_file(exp_path, shown)
    for key in ("model", "n_trials"):
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

    callbacks = []
    if spec.wandb.mode != "disabled":
        from ray.air.integrations.wandb import WandbLoggerCallback

        # Never an api_key= here: it would be pickled into the experiment's tuner.pkl.
        callbacks.append(WandbLoggerCallback(
            project=spec.wandb.project, group=spec.name, entity=spec.wandb.entity, mode=spec.wandb.mode,
            resume="allow", excludes=["node_id"],
        ))
    return tune.RunConfig(
        name=spec.name,
        storage_path=storage_uri(spec.storage_path),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.keep_checkpoints),
        callbacks=callbacks,
        verbose=1,
    )


def _trainable(spec: SweepSpec):
    from ray import tune

    from sweeps.trainable import run_trial

    res = {"cpu": spec.resources_per_trial.cpu, "gpu": spec.resources_per_trial.gpu}
    return tune.with_resources(run_trial, res)


def _init_ray() -> None:
    import ray

    if not ray.is_initialized():
        # No address: RAY_ADDRESS (set by `ray job submit` or the user) picks the cluster, else local.
        ray.init(log_to_driver=True)


def _finish(spec: SweepSpec, exp_path: str) -> int:
    from sweeps.report import load_trials, log_report_to_wandb, write_report

    local = local_copy(exp_path)
    trials = load_trials(local)
    print()
    _print_table(trials)
    report = write_report(local, None if local == exp_path else layout.default_report_dir(exp_path, spec.name),
                          trials=trials)
    print(f"report: {report}")
    if spec.wandb.mode != "disabled":
        log_report_to_wandb(report.parent, spec.wandb.project, spec.name, spec.wandb.entity, spec.wandb.mode)
    return 0


def _print_table(trials) -> None:
    from collections import Counter

    counts = Counter(t.state for t in trials)
    print("trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    header = f"{'trial':<44} {'state':<10} " + " ".join(f"{k:>20}" for k in SUMMARY_KEYS)
    print(header)
    for t in sorted(trials, key=lambda t: (str(t.hook), str(t.mode), float(t.sparsity_coeff or 0))):
        cells = " ".join(f"{_fmt(t.metrics.get(k)):>20}" for k in SUMMARY_KEYS)
        name = f"{t.mode} {t.hook} c={t.sparsity_coeff:g}" if t.sparsity_coeff is not None else t.trial_id
        print(f"{name:<44} {t.state:<10} {cells}")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ---- commands ------------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    spec, trials = _prepare(args.file, args.set)
    base = base_run_dict(spec)
    print(f"sweep {spec.name}: {len(trials)} trials -> {spec.experiment_path}")
    print(f"resources per trial: cpu={spec.resources_per_trial.cpu:g} gpu={spec.resources_per_trial.gpu:g}")
    for i, t in enumerate(trials):
        diff = config_diff(base, t["run"])
        diff.pop("wandb.mode", None)
        print(f"{i:>3} {trial_name(t):<40} " + " ".join(f"{k}={v}" for k, v in diff.items()))
    return 0


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
        param_space=_param_space(trials),
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent_trials),
        run_config=_tune_run_config(spec),
    )
    return _fit_and_finish(tuner, spec, exp_path)


def _fit_and_finish(tuner, spec: SweepSpec, exp_path: str) -> int:
    """Say where the results go before Tune prints anything, and again as the last line, whatever happens."""
    print("\n".join(layout.where_lines(exp_path)), flush=True)
    try:
        tuner.fit()
        return _finish(spec, exp_path)
    finally:
        print(layout.where_line(exp_path), flush=True)


def _param_space(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """One grid axis over trial indices; every other key is derived from it, so params.json is flat."""
    from ray import tune

    space: dict[str, Any] = {"trial_index": tune.grid_search(list(range(len(trials))))}
    for key in trials[0]:
        space[key] = tune.sample_from(_pick(trials, key))
    return space


class _pick:
    """``sample_from`` callable: trial ``key`` of the trial the grid index selects (picklable)."""

    def __init__(self, trials: list[dict[str, Any]], key: str):
        self.values = [t[key] for t in trials]

    def __call__(self, spec) -> Any:
        return self.values[spec.config["trial_index"]]


def cmd_resume(args: argparse.Namespace) -> int:
    from ray.tune import Tuner

    layout.check_placement(args.path, layout.job_placement(), args.storage_shared, resume=True)  # before any read
    exp_path = storage_uri(args.path)
    spec = _read_sweep_file(exp_path)
    if not Tuner.can_restore(exp_path):
        raise ConfigError(f"{exp_path}: no Tune experiment state to restore; start it with `python -m sweeps run`")
    _wandb_env(spec)
    _init_ray()
    layout.check_placement(args.path, layout.cluster_placement(), spec.storage_shared or args.storage_shared,
                           resume=True)
    # Finished trials stay finished; interrupted and errored ones continue from their checkpoints.
    # param_space again: Tune cannot unpickle sample_from functions for trials not yet created.
    tuner = Tuner.restore(exp_path, trainable=_trainable(spec), resume_unfinished=True, resume_errored=True,
                          param_space=_param_space(expand_trials(spec)))
    return _fit_and_finish(tuner, spec, exp_path)


def cmd_status(args: argparse.Namespace) -> int:
    from sweeps.report import load_trials

    _print_table(load_trials(local_copy(args.path)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sweeps.report import log_report_to_wandb, write_report

    local = local_copy(args.path)
    out = args.out or (None if local == args.path else layout.REPORT_DIR)
    report = write_report(local, out)
    print(f"report: {report}")
    if args.wandb:
        spec = _read_sweep_file(local, shown=args.path)  # the copy local_copy made of a remote one
        log_report_to_wandb(report.parent, spec.wandb.project, spec.name, spec.wandb.entity,
                            os.environ.get("WANDB_MODE", spec.wandb.mode))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps", description="Ray Tune sweeps of e2e_sae runs")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in [("plan", "print the expanded trial table; starts nothing"),
                        ("run", "run every trial of a sweep file with Ray Tune")]:
        p = sub.add_parser(name, help=help_)
        p.add_argument("file", help="sweep YAML")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a sweep-file field (YAML value)")
    p = sub.add_parser("resume", help="continue an interrupted sweep from its experiment directory")
    p.add_argument("path")
    p.add_argument("--storage-shared", action="store_true",
                   help="PATH is on a filesystem every node of the cluster mounts (as storage_shared: true)")
    p = sub.add_parser("status", help="trials by state with their latest metrics")
    p.add_argument("path")
    p = sub.add_parser("report", help="Pareto report of an experiment directory")
    p.add_argument("path")
    p.add_argument("--out", default=None, help=f"output directory (default: PATH/{layout.REPORT_DIR}; "
                   f"./{layout.REPORT_DIR} for s3:// or gs:// paths)")
    p.add_argument("--wandb", action="store_true", help="also upload the report to the sweep's W&B group")
    args = parser.parse_args(argv)
    commands = {"plan": cmd_plan, "run": cmd_run, "resume": cmd_resume, "status": cmd_status, "report": cmd_report}
    try:
        return commands[args.command](args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
