"""One session of a tiny target search on real Ray Tune, no training (tests/test_search_ray.py):
``run EXP FLAG`` starts it, ``resume EXP`` continues it as ``sweeps resume`` does (errored trials
re-run). A trial reports L0 = 150 c^-0.7, except that while FLAG exists a curve's first trial at its
start coefficient errors (its retry, ``..._retry1``, does not)."""

from __future__ import annotations

import sys
from pathlib import Path

import ray
from ray import tune

from sweeps.planning.curve_search import CurveSearch
from sweeps.running.searcher import TargetSearcher, target_search_alg, trial_label

RUN = {"mode": "local", "seed": 0, "sae": {"position": "blocks.1.hook_resid_pre", "dict_size_to_input_ratio": 2.0}}
TEMPLATE = {"run": {**RUN, "loss": {"sparsity": {"coeff": None}}}}


def trainable(config):
    coeff = config["run"]["loss"]["sparsity"]["coeff"]
    if Path(config["flag"]).exists() and "name" not in config and coeff == 1.0:
        raise RuntimeError("the start's first attempt errors")
    tune.report({"l0": 150 * coeff**-0.7, "final": True})


def name(trial) -> str:
    return trial_label(trial.config)


def main(command: str, exp: Path, flag: str = "") -> None:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    if command == "run":
        group = CurveSearch("local_L1_r2_seed0", "l0", [20, 80], tolerance=0.15, budget=6, start=1.0)
        searcher = TargetSearcher({group.key: group}, {group.key: {**TEMPLATE, "flag": flag}})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=target_search_alg(searcher, max_concurrent=2),
                num_samples=6,
                trial_name_creator=name,
                trial_dirname_creator=name,
            ),
            run_config=tune.RunConfig(
                name=exp.name, storage_path=str(exp.parent), failure_config=tune.FailureConfig(max_failures=0)
            ),
        )
    else:
        tuner = tune.Tuner.restore(str(exp), trainable=trainable, resume_unfinished=True, resume_errored=True)
    tuner.fit()
    ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:])
