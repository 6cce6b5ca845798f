"""A sweep with a fine-tune stage on real Ray Tune, tiny model: each finished local trial starts its
KL fine-tune from its own last checkpoint; with the driver killed mid-stage, ``resume`` re-runs neither
finished parents nor finished children; a parent that errored has no child (``status``: skipped)."""

from __future__ import annotations

import pytest
import torch
from sweep_fixtures import tiny_sweep, write_sweep
from test_sweeps_ray import (
    _assert_not_trained_again,
    _finished_trials,
    _kill_driver_after_first_finished_trial,
    _sweeps,
)

from sweeps.reporting.results import load_trials, trial_checkpoints

pytestmark = pytest.mark.slow


def test_a_killed_staged_sweep_resumes_without_rerunning_parents_or_children(tmp_path):
    spec = tiny_sweep(
        tmp_path,
        name="staged",
        max_concurrent_trials=1,
        max_failures=0,
        finetune=[{"name": "kl", "parent_modes": ["local"], "modes": ["e2e"], "fractions": [0.5]}],
    )
    spec["axes"]["sparsity_coeff"]["local"] = [0.1, 1e39]  # 1e39 overflows float32: that parent errors
    spec["run"]["train"]["n_samples"] = 800
    spec["checkpoint_every_n_samples"] = 400
    exp = tmp_path / "results" / "staged"
    _kill_driver_after_first_finished_trial(write_sweep(tmp_path, spec), exp, lambda name: name.endswith("pct"))
    before = _finished_trials(exp)
    assert "local_L1_r2_s0.1_seed0_kl_e2e_50pct" in before

    proc = _sweeps("resume", str(exp))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = {t.trial_id: t for t in load_trials(exp)}
    assert {k: t.state for k, t in trials.items()} == {
        "local_L1_r2_s0.1_seed0": "finished",
        "local_L1_r2_s1e+39_seed0": "errored",
        "e2e_L1_r2_s0.1_seed0": "finished",
        "local_L1_r2_s0.1_seed0_kl_e2e_50pct": "finished",
    }
    _assert_not_trained_again(exp, before)  # neither the parent nor the child trained again

    parent, child = trials["local_L1_r2_s0.1_seed0"], trials["local_L1_r2_s0.1_seed0_kl_e2e_50pct"]
    assert child.metrics["parent_n_samples"] == 800 and child.metrics["n_samples"] == 400
    assert child.series == "local -> e2e, 50%"
    saved = torch.load(trial_checkpoints(child)[-1] / "checkpoint.pt", weights_only=True)
    assert saved["config"]["finetune"]["parent"].endswith("/parent")  # the copy of the parent's checkpoint
    # ... deleted when the trial ended: the metrics name the parent's checkpoint as the storage keeps it
    assert child.metrics["finetune_parent"] == str(trial_checkpoints(parent)[-1])
    parent_final = torch.load(trial_checkpoints(parent)[-1] / "checkpoint.pt", weights_only=True)
    assert parent_final["n_samples"] == 800

    status = _sweeps("status", str(exp))
    assert status.returncode == 0, status.stderr
    assert "local_L1_r2_s0.1_seed0: finished -> local_L1_r2_s0.1_seed0_kl_e2e_50pct finished" in status.stdout
    assert "local_L1_r2_s1e+39_seed0: errored -> skipped local_L1_r2_s1e+39_seed0_kl_e2e_50pct (parent error:" in (
        status.stdout
    )
    report = (exp / "report" / "report.md").read_text()
    assert "local -> e2e, 50%" in report and "### Fine-tunes at matched L0" in report
