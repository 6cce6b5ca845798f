"""Real Ray Tune sweeps on a tiny model: a sweep that succeeds prints no traceback and leaves each
checkpoint once in its storage, a killed trial resumes from its checkpoint, a killed driver's sweep is
resumed without re-running finished trials, Ctrl-C ends with the resume command, trials carry the
sweep's own names, and nothing is ever overwritten."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import wandb
import yaml
from ray_fixtures import REPO, ray_free_env
from sweep_fixtures import tiny_sweep, write_sweep

from e2e_sae.config import run_config_from_dict
from e2e_sae.train import train
from sweeps.planning.curve_search import search_value
from sweeps.planning.plan import Plan
from sweeps.planning.spec import sweep_from_dict
from sweeps.reporting.results import load_trials
from sweeps.running.trainable import WANDB_SERVICE_ENV
from sweeps.running.tuner import EXIT_INTERRUPTED

pytestmark = pytest.mark.slow

METRICS = ("l0", "ce_loss_increase", "kl", "explained_variance", "alive_dict_elements", "n_samples")


def _env(**extra: str) -> dict[str, str]:
    env = ray_free_env()  # never join another cluster or pick up its auth settings
    env.update({"WANDB_MODE": "disabled", "RAY_DEDUP_LOGS": "0", "PYTHONUNBUFFERED": "1", **extra})
    return env


def _sweeps(*args: str, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweeps", *args], capture_output=True, text=True, env=env or _env(), timeout=timeout
    )


def _plan_names(spec: dict) -> list[str]:
    """The trial names `python -m sweeps plan` prints."""
    return Plan.from_spec(sweep_from_dict(spec)).names


def _final_row(trial_dir) -> dict:
    return json.loads((trial_dir / "result.json").read_text().splitlines()[-1])


def test_a_sweep_that_succeeds_prints_no_traceback_and_stores_each_checkpoint_once(tmp_path):
    """Ray ends every finished trial's worker with SIGTERM; that must not print a traceback. The storage
    holds what Tune persisted (result rows, checkpoints with the final metrics), no run directory."""
    spec = tiny_sweep(tmp_path, name="quiet", max_failures=0)
    proc = _sweeps("run", str(write_sweep(tmp_path, spec)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for text in ("Traceback", "Exception ignored", "SystemExit"):
        assert text not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-5000:]
    exp = tmp_path / "results" / "quiet"
    trials = load_trials(exp)
    assert [t.state for t in trials] == ["finished"] * 3
    for t in trials:
        assert not (t.path / "run").exists()  # the library's run directory stays on the trial's node
        files = [p for p in t.path.rglob("*") if p.is_file()]
        checkpoints = [p for p in files if p.relative_to(t.path).parts[0].startswith("checkpoint_")]
        assert sorted({p.name for p in checkpoints}) == ["checkpoint.pt", "metrics.json"]
        other = sum(p.stat().st_size for p in files) - sum(p.stat().st_size for p in checkpoints)
        assert other < sum(p.stat().st_size for p in checkpoints) / 4, sorted(map(str, files))  # rows, params
        final = json.loads((sorted(t.path.glob("checkpoint_*"))[-1] / "metrics.json").read_text())
        assert final["final"] is True and all(t.metrics[k] == v for k, v in final.items())  # the final row's


def test_sweep_with_a_killed_trial_finishes_with_uninterrupted_metrics(tmp_path):
    spec = tiny_sweep(tmp_path, wandb={"mode": "offline", "project": "test"})
    path = write_sweep(tmp_path, spec)
    marker = tmp_path / "killed-once"
    env = _env(WANDB_MODE="offline", WANDB_SILENT="true")
    # tests/trial_killer.py: `python -m sweeps` whose trials SIGKILL themselves once after a checkpoint
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "trial_killer.py"), "kill", "32", str(marker), "run", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / "results" / "tiny"
    assert marker.exists()  # one trial process was SIGKILLed mid-training
    trials = load_trials(exp)
    assert [t.state for t in trials] == ["finished"] * 3
    # Trial directories, the report's tables and the live status table use the names `plan` prints.
    names = _plan_names(spec)
    trial_dirs = sorted(p.parent.name for p in exp.glob("*/params.json"))
    assert sorted(t.trial_id for t in trials) == sorted(names) == trial_dirs
    assert all(f"| {n} " in proc.stdout for n in names)  # rows of Tune's status table
    assert "ce_loss_original" not in proc.stdout and "CE increase" in proc.stdout
    assert "SystemExit" not in proc.stdout + proc.stderr
    # ... and Tune restarted it from its checkpoint at 32, not from scratch: the retry's first report
    # was its final row at 64 (a restart from 0 would have reported 32 again).
    finals = [_final_row(t.path) for t in trials]
    assert sorted((r["iterations_since_restore"], r["training_iteration"]) for r in finals) == [(1, 2), (2, 2), (2, 2)]
    for t in trials:  # same final metrics as an uninterrupted run of the same config and seed
        params = json.loads((t.path / "params.json").read_text())
        direct = train(run_config_from_dict(params["run"], {"output_dir": str(tmp_path / t.trial_id)}), progress=False)
        for k in METRICS:
            assert t.metrics[k] == pytest.approx(direct[k], rel=1e-6, abs=1e-9), (t.trial_id, k)
    for t in trials:  # one W&B run per trial through Ray's callback, its id the trial's (resumed, not new)
        runs = list((t.path / "wandb").glob("offline-run-*"))
        tune_id = json.loads((t.path / "result.json").read_text().splitlines()[0])["trial_id"]
        assert runs and {r.name.rsplit("-", 1)[1] for r in runs} == {tune_id}
    report = exp / "report"
    assert {"report.md", "pareto.json", "trials.csv"} <= {p.name for p in report.iterdir()}
    assert f"report: {report / 'report.md'}" in proc.stdout
    csv_ids = [line.split(",")[0] for line in (report / "trials.csv").read_text().splitlines()[1:]]
    assert sorted(csv_ids) == sorted(names)
    markdown = (report / "report.md").read_text()  # its tables name the frontier trials
    assert any(n in markdown for n in names) and "run_trial" not in markdown

    before = {p: p.stat().st_mtime_ns for p in exp.rglob("*") if p.is_file()}
    again = _sweeps("run", str(path))
    assert again.returncode == 2
    assert "already exists" in again.stderr and "sweeps resume" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in exp.rglob("*") if p.is_file()} == before

    status = _sweeps("status", str(exp))
    assert status.returncode == 0 and "3 finished" in status.stdout
    assert all(f"\n{n} " in status.stdout for n in names)


def _final_checkpoint_metrics(trial_dir) -> dict | None:
    """The final metrics in a (non-grouped) trial directory's newest checkpoint, None if it holds none.

    The earliest sign in the storage that a trial finished: its last checkpoint, with the final
    metrics, is persisted as the trial reports it, while Tune's driver writes params.json and
    result.json to the storage only when it next syncs the experiment (every several seconds; a
    trial of these tests takes under a second on an idle machine)."""
    ckpts = sorted(p for p in trial_dir.glob("checkpoint_*") if (p / "metrics.json").is_file())
    try:
        final = json.loads((ckpts[-1] / "metrics.json").read_text()) if ckpts else None
    except (OSError, json.JSONDecodeError):
        return None  # being written
    return final if isinstance(final, dict) and final.get("final") is True else None


def _kill_driver_after_first_finished_trial(sweep_file, exp, which=lambda trial_id: True) -> None:
    """Start ``python -m sweeps run`` and SIGKILL it (the driver and the local Ray it started) as soon
    as one trial of ``exp`` (``which`` trial directory names) has its final checkpoint in the storage."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweeps", "run", str(sweep_file)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if exp.exists() and any(
                which(d.name) and _final_checkpoint_metrics(d) for d in exp.iterdir() if d.is_dir()
            ):
                break
            time.sleep(0.05)
        else:
            pytest.fail("no trial finished in time")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


def _finished_trials(exp) -> dict[str, tuple[str, dict]]:
    """Each trial of ``exp`` that finished before the kill (its final checkpoint is in the storage):
    its result.json text, if the driver had written one there yet, and its final metrics."""
    out = {}
    for d in sorted(p for p in exp.iterdir() if p.is_dir()):
        final = _final_checkpoint_metrics(d)
        if final is not None:
            out[d.name] = ((d / "result.json").read_text() if (d / "result.json").is_file() else "", final)
    return out


def _assert_not_trained_again(exp, before: dict[str, tuple[str, dict]]) -> None:
    """Finished trials kept their rows and never trained again. One that finished after Tune's last
    snapshot of the experiment is restored from its final checkpoint: it may re-report the same final
    metrics (its only rows, when the driver had not written its result.json yet), never a training step."""
    trials = {t.trial_id: t for t in load_trials(exp)}
    for trial_id, (rows, final) in before.items():
        after = (trials[trial_id].path / "result.json").read_text()
        assert after.startswith(rows), trial_id
        for line in after[len(rows) :].splitlines():
            row = json.loads(line)
            assert row["final"] and all(row[k] == final[k] for k in METRICS), (trial_id, row)


def test_killed_driver_then_resume_completes_without_rerunning_finished_trials(tmp_path):
    spec = tiny_sweep(tmp_path, max_concurrent_trials=1, name="driver-crash")
    # Trials of a second or two (idle machine), so the kill lands before the next trial finishes; two
    # checkpoints each, far apart relative to Tune's state snapshots.
    spec["run"]["train"]["n_samples"] = 3200
    spec["checkpoint_every_n_samples"] = 1600
    path = write_sweep(tmp_path, spec)
    exp = tmp_path / "results" / "driver-crash"
    _kill_driver_after_first_finished_trial(path, exp)
    finished = _finished_trials(exp)
    assert 1 <= len(finished) < 3

    proc = _sweeps("resume", str(exp))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = load_trials(exp)
    assert [t.state for t in trials] == ["finished"] * 3
    assert sorted(t.trial_id for t in trials) == sorted(_plan_names(spec))  # resume found the named trials
    _assert_not_trained_again(exp, finished)
    assert (exp / "report" / "report.md").is_file()


def test_ctrl_c_ends_with_the_resume_command(tmp_path):
    spec = tiny_sweep(tmp_path, max_concurrent_trials=1, name="ctrl-c")
    spec["run"]["train"]["n_samples"] = 3200  # long enough to be interrupted while running
    path = write_sweep(tmp_path, spec)
    exp = tmp_path / "results" / "ctrl-c"
    # Its own session, so the SIGINT goes to its whole process group, as a terminal's Ctrl-C does.
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweeps", "run", str(path)],
        env=_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not any(p.stat().st_size for p in exp.glob("*/result.json")):
            time.sleep(0.3)
        os.killpg(driver.pid, signal.SIGINT)
        out, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == EXIT_INTERRUPTED, out[-3000:]
    assert out.rstrip().splitlines()[-1] == f"continue with: python -m sweeps resume {exp}", out[-3000:]
    for text in ("Tuner.restore", "FileNotFoundError", "Traceback"):
        assert text not in out, out[-3000:]
    assert not (exp / "report").exists()  # no report of a sweep that was stopped


def test_target_search_killed_driver_resumes_the_search_and_reaches_targets_or_budget(tmp_path):
    """One Ray run of a tiny target search, its driver killed after the first trial finished, then
    ``sweeps resume``: no finished trial re-runs, the searcher's state comes back from the experiment
    (the resumed search proposes what a search fed the same results proposes: replayed below with
    the Ray-free CurveSearch), and the search ends with its targets met or its budget spent."""
    from sweeps.planning.target_search import build_curves

    spec = tiny_sweep(tmp_path, max_concurrent_trials=1, name="search-crash")
    spec["axes"] = {"mode": ["local"], "layer": [1]}
    spec["search"] = {
        "kind": "targets",
        "targets": {"l0": [2, 11]},
        "tolerance": 0.1,
        "max_trials_per_curve": 3,
        "start": {"local": 0.5},
    }
    spec["run"]["train"]["n_samples"] = 1600  # a second or two per trial: the kill lands before the next ends
    spec["checkpoint_every_n_samples"] = 800
    path = write_sweep(tmp_path, spec)
    exp = tmp_path / "results" / "search-crash"
    _kill_driver_after_first_finished_trial(path, exp)
    finished = _finished_trials(exp)
    assert 1 <= len(finished) < 3

    proc = _sweeps("resume", str(exp))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = load_trials(exp)
    assert all(t.state == "finished" for t in trials)
    _assert_not_trained_again(exp, finished)
    # The set of trials is the one an uninterrupted search fed the same results proposes (a searcher
    # that lost its state would propose the start coefficient again, and more than 3 trials).
    by_coeff = {round(t.sparsity_coeff, 9): t.metrics for t in trials}
    (curve,) = build_curves(Plan.from_spec(sweep_from_dict(spec))).values()
    replayed = []
    while proposals := curve.proposals():
        coeff = proposals[0].coeff
        replayed.append(coeff)
        curve.start_trial(str(len(replayed)), proposals[0])
        curve.record(str(len(replayed)), search_value("l0", by_coeff.get(round(coeff, 9), {})))
    assert sorted(t.sparsity_coeff for t in trials) == pytest.approx(sorted(replayed), rel=1e-9)
    assert curve.is_done() and (len(trials) == 3 or all(curve.standing(t).state != "searching" for t in (2, 11)))
    status = _sweeps("status", str(exp))  # from the trials on disk and sweep.yaml's search settings
    rows = [line.split() for line in status.stdout.splitlines() if line.startswith("local_L1_r2_seed0 ")]
    assert [r[1:3] for r in rows] == [[str(t), "yes" if curve.is_met(t) else "no"] for t in (2, 11)]
    saved = yaml.safe_load((exp / "sweep.yaml").read_text())  # the search's size, not a grid's trial count
    assert (saved["n_curves"], saved["max_trials"]) == (1, 3) and "n_trials" not in saved
    assert (exp / "report" / "report.md").is_file()


def test_grouped_sweep_with_a_killed_group_resumes_every_member_from_its_checkpoint(tmp_path):
    """group_size 2: the two local trials train as one Tune trial, the e2e one alone. The group is
    SIGKILLed after its first checkpoint; Tune's retry resumes every member from it; members are trials
    (with their plan names) in status, trials.csv and W&B, and end with an uninterrupted run's metrics."""
    spec = tiny_sweep(
        tmp_path, name="grouped", group_size=2, max_concurrent_trials=1, wandb={"mode": "offline", "project": "test"}
    )
    path = write_sweep(tmp_path, spec)
    marker = tmp_path / "killed-once"
    # The sweep is started from a process that has used wandb (as a notebook or script might), so it
    # and Ray's workers inherit that process's W&B service: it outlives the killed group and must not
    # refuse the retry's resumed member runs ("run ID ... is in use").
    wandb.init(mode="offline", dir=str(tmp_path), settings=wandb.Settings(reinit="create_new")).finish()
    assert os.environ.get(WANDB_SERVICE_ENV)
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "trial_killer.py"), "kill", "32", str(marker), "run", str(path)],
        capture_output=True,
        text=True,
        env=_env(WANDB_MODE="offline", WANDB_SILENT="true"),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert marker.exists()  # the first group (max_concurrent_trials 1: the local one) was SIGKILLed
    exp = tmp_path / "results" / "grouped"
    names = _plan_names(spec)
    trials = load_trials(exp)
    states = [(t.trial_id, t.state, t.error) for t in trials]
    assert sorted(t.trial_id for t in trials) == sorted(names), states
    assert {t.state for t in trials} == {"finished"}, (states, proc.stdout[-3000:], proc.stderr[-3000:])
    assert sorted(p.parent.name for p in exp.glob("*/params.json")) == ["e2e_L1_group1", "local_L1_group0"]
    group = exp / "local_L1_group0"
    members = json.loads((group / "params.json").read_text())["member_names"]
    assert members == names[:2]
    # Rows of result.json are not asserted beyond the last: on a retry Ray copies the trial's
    # result.json back from the storage copy of its last experiment sync, so rows reported between
    # that sync and the kill may be gone (Ray's behaviour; the final row, which results read, is not).
    rows = [json.loads(line) for line in (group / "result.json").read_text().splitlines()]
    assert rows[-1]["n_samples"] == 64 and rows[-1]["final"] is True
    # The retry resumed from the group checkpoint at 32: its first report was the final row at 64.
    assert (rows[-1]["iterations_since_restore"], rows[-1]["training_iteration"]) == (1, 2)
    tune_id = rows[-1]["trial_id"]
    for i, name in enumerate(members):  # each member's own W&B run, resumed, copied to the storage
        runs = list((group / name / "wandb").glob("offline-run-*"))
        assert len(runs) == 2 and {r.name.rsplit("-", 1)[1] for r in runs} == {f"{tune_id}_m{i}"}
    assert not (group / "run").exists()
    assert not (group / "wandb").exists()  # no W&B run of the group itself
    for t in trials:  # same final metrics as an uninterrupted separate run of the planned trial
        direct = train(run_config_from_dict(t.run, {"output_dir": str(tmp_path / t.trial_id)}), progress=False)
        for k in METRICS:
            assert t.metrics[k] == pytest.approx(direct[k], rel=1e-6, abs=1e-9), (t.trial_id, k)
    csv_ids = [line.split(",")[0] for line in (exp / "report" / "trials.csv").read_text().splitlines()[1:]]
    assert sorted(csv_ids) == sorted(names)
    status = _sweeps("status", str(exp))
    assert status.returncode == 0 and "3 finished" in status.stdout
    assert all(f"\n{n} " in status.stdout for n in names)
