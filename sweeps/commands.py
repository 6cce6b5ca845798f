"""The commands of ``python -m sweeps``, each from its arguments to its output (:mod:`sweeps.cli` parses).

Everything that can be checked (sweep file, every trial's run config, the model's layers, the storage
path, an existing experiment of that name) is checked before Ray starts; whether the storage path
survives the driver and is reachable from every node (:mod:`sweeps.running.placement`) is checked as
soon as Ray is connected, before anything is written or any trial starts. Ray, numpy and torch-heavy
modules are imported inside the commands that need them.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from e2e_sae.config import ConfigError
from e2e_sae.metric_names import SWEEP_STATUS
from e2e_sae.validate import unknown_shape_line
from sweeps import experiment
from sweeps.experiment import check_storage, local_copy, storage_uri
from sweeps.planning.plan import Plan
from sweeps.planning.spec import config_diff, read_saved_sweep
from sweeps.planning.trial import Trial, members_of


def plan(path: str, set_items: list[str] | None) -> int:
    """Print the plan: its trials (or curves) with what each changes in the base run config."""
    p = Plan.from_file(path, set_items, network=False)
    check_storage(p.spec.storage_path)
    if not p.shape_known and p.run_configs[0].model.name:
        print(unknown_shape_line(p.run_configs[0].model))
    _print_plan(p)
    if p.spec.finetune:
        from sweeps.planning.finetune_stage import plan_lines as stage_lines

        print("\n".join(stage_lines(p.spec.finetune)))
    return 0


def _print_plan(p: Plan) -> None:
    spec = p.spec
    unit = "group (one Tune trial)" if spec.group_size > 1 else "trial"
    if p.is_search:
        from sweeps.planning.target_search import plan_lines

        print(f"sweep {spec.name}: target search -> {spec.experiment_path}")
        print(f"resources per {unit}: cpu={spec.resources_per_trial.cpu:g} gpu={spec.resources_per_trial.gpu:g}")
        print("\n".join(plan_lines(p)))
        if spec.group_size > 1:
            print(f"group_size {spec.group_size}: up to {spec.group_size} proposals of a curve train as one Tune trial")
            print("\n".join(_packing_lines(p)))
        print("curves (their run config; the search sets loss.sparsity.coeff):")
        for name, t in zip(p.names, p.trials, strict=True):
            diff = config_diff(p.base_run, t.planned_run)
            for key in ("wandb.mode", "loss.sparsity.coeff"):
                diff.pop(key, None)
            print(f"    {name:<36} " + " ".join(f"{k}={v}" for k, v in diff.items()))
        return
    groups = f" in {len(p.tune_trials)} groups of at most {spec.group_size}" if spec.group_size > 1 else ""
    print(f"sweep {spec.name}: {len(p.trials)} trials{groups} -> {spec.experiment_path}")
    print(f"resources per {unit}: cpu={spec.resources_per_trial.cpu:g} gpu={spec.resources_per_trial.gpu:g}")
    blocks: list[tuple[str | None, list[tuple[str, dict[str, Any]]]]]
    if spec.group_size == 1:
        blocks = [(None, list(zip(p.names, p.tune_trials, strict=True)))]
    else:
        blocks = [(c["name"], members_of(c)) for c in p.tune_trials]
    index = {name: i for i, name in enumerate(p.names)}
    for group, members in blocks:
        if group is not None:
            print(f"group {group} (one Tune trial):")
        for name, member in members:
            diff = config_diff(p.base_run, member["run"])
            diff.pop("wandb.mode", None)
            print(f"{index[name]:>3} {name:<40} " + " ".join(f"{k}={v}" for k, v in diff.items()))


def run(path: str, set_items: list[str] | None) -> int:
    from sweeps.running import placement, tuner

    p = Plan.from_file(path, set_items)
    spec, exp_path = p.spec, p.spec.experiment_path
    check_storage(spec.storage_path)
    placement.check_placement(spec.storage_path, placement.job_placement(), spec.storage_shared)  # before Ray
    if tuner.experiment_exists(exp_path):
        raise ConfigError(
            f"experiment {exp_path} already exists; continue it with `python -m sweeps resume {exp_path}` "
            f"or pick a new name (--set name=...); nothing was overwritten"
        )
    tuner.set_wandb_env(spec)
    tuner.init_ray()
    placement.check_placement(spec.storage_path, placement.cluster_placement(), spec.storage_shared)  # nodes known
    experiment.write_sweep_file(exp_path, p.saved_text())
    return _fit_and_finish(tuner.new_tuner(p), p, exp_path)


def resume(path: str, storage_shared: bool) -> int:
    from ray.tune import Tuner

    from sweeps.running import placement, tuner

    placement.check_placement(path, placement.job_placement(), storage_shared, resume=True)  # before any read
    exp_path = storage_uri(path)
    if not experiment.is_remote(exp_path):
        experiment.check_experiment(exp_path, shown=path)  # a remote one without sweep.yaml: read_saved_sweep says
    spec = read_saved_sweep(exp_path).spec
    if not Tuner.can_restore(exp_path):
        raise ConfigError(f"{exp_path}: no Tune experiment state to restore; start it with `python -m sweeps run`")
    p = Plan.from_spec(spec)
    tuner.set_wandb_env(spec)
    tuner.init_ray()
    placement.check_placement(path, placement.cluster_placement(), spec.storage_shared or storage_shared, resume=True)
    return _fit_and_finish(tuner.restored_tuner(p, exp_path), p, exp_path)


def _fit_and_finish(the_tuner, p: Plan, exp_path: str) -> int:
    """Say where the results go before Tune prints anything, and again as the last line: the resume
    command after a Ctrl-C, else the experiment and its commands, whatever else happens."""
    from sweeps.running.tuner import EXIT_INTERRUPTED, fit, n_tune_trials

    print("\n".join(experiment.where_lines(exp_path)), flush=True)
    interrupted = False
    try:
        interrupted = not fit(the_tuner, exp_path, n_tune_trials(p))
        return EXIT_INTERRUPTED if interrupted else _finish(p, exp_path)
    finally:
        if not interrupted:
            print(experiment.where_line(exp_path), flush=True)


def _finish(p: Plan, exp_path: str) -> int:
    from sweeps.reporting.report import write_report
    from sweeps.reporting.results import load_trials
    from sweeps.reporting.wandb_upload import log_report_to_wandb

    spec = p.spec
    local = local_copy(exp_path)
    trials = load_trials(local)
    print()
    print_table(trials)
    out = None if local == exp_path else experiment.default_report_dir(exp_path, spec.name)
    report = write_report(local, out, trials=trials)
    print(f"report: {report}")
    if spec.wandb.mode != "disabled":
        log_report_to_wandb(report.parent, spec.wandb.project, spec.name, spec.wandb.entity, spec.wandb.mode)
    return 0


def status(path: str) -> int:
    """Trials by state with their latest metrics; a target search's standing per curve and target."""
    from sweeps.reporting.results import load_trials

    local = local_copy(path)
    experiment.check_experiment(local, shown=path)
    trials = load_trials(local)
    print_table(trials)
    if (Path(local) / experiment.SWEEP_FILE).is_file():
        spec = read_saved_sweep(local, shown=path).spec
        if spec.search.kind == "targets":
            from sweeps.planning.target_search import status_lines

            print()
            print("\n".join(status_lines(Plan.from_spec(spec, against_model=False), trials)))
        if spec.finetune:
            from sweeps.planning import finetune_stage

            print()
            print("\n".join(finetune_stage.status_lines(spec.finetune, trials)))
    return 0


def report(path: str, out: str | None, wandb: bool) -> int:
    from sweeps.reporting.report import write_report
    from sweeps.reporting.wandb_upload import log_report_to_wandb

    if out is not None:
        from e2e_sae.export import check_under_directory

        check_under_directory(Path(out))
    local = local_copy(path)
    experiment.check_experiment(local, shown=path)  # before report/ is written into it
    written = write_report(local, out or (None if local == path else experiment.REPORT_DIR))
    print(f"report: {written}")
    if wandb:
        spec = read_saved_sweep(local, shown=path).spec  # the copy local_copy made of a remote one
        mode = os.environ.get("WANDB_MODE", spec.wandb.mode)
        log_report_to_wandb(written.parent, spec.wandb.project, spec.name, spec.wandb.entity, mode)
    return 0


def analyse(path: str, out: str | None, trials: list[str] | None) -> int:
    from sweeps.analysis.analyse import analyse_experiment

    index = analyse_experiment(path, out, trials)
    print(f"feature browser: {index}")
    print(f"geometry: {index.parent / 'analysis.md'}")
    return 0


def export(path: str, frontier: bool, out: str) -> int:
    """Every finished trial's SAE (``frontier``: those on the report's frontiers) as a SAELens release."""
    from sweeps.reporting.release import export_experiment

    manifest = export_experiment(path, out, frontier)
    n = len(json.loads(manifest.read_text())["saes"])
    print(f"exported {n} SAEs to {manifest.parent} (manifest: {manifest})")
    print(f"publish: huggingface-cli upload USER/REPO {manifest.parent}")
    return 0


def print_table(trials: list[Trial]) -> None:
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


def _packing_lines(p) -> list[str]:
    """Which curves fill a grouped trial's places left (they share its clean pass), or why none do."""
    from sweeps.planning.target_search import packable_curves

    sets = {tuple(sorted([name, *others])) for name, others in packable_curves(p).items() if others}
    if not sets:
        return ["  places left stay empty: no two curves share a clean pass (seeds pack only where data.seed is set)"]
    lines = [f"    {' + '.join(names)}" for names in sorted(sets)]
    return ["  places left are filled from curves sharing its clean pass:", *lines]
