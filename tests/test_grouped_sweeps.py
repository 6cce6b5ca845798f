"""Grouped sweeps (``group_size``) without Ray: planning and chunking, the group's one-row reports and
checkpoints, resume of every member from a group checkpoint, members read back as trials, the target
searcher packing a curve's proposals into groups, and bad group sizes."""

from __future__ import annotations

import json
import shutil

import pytest
from sweep_fixtures import tiny_sweep

from e2e_sae.config import ConfigError, run_config_from_dict
from e2e_sae.run_dir import DIVERGED_FILE
from e2e_sae.train import train
from sweeps.planning.curve_search import CurveSearch
from sweeps.planning.plan import Plan
from sweeps.planning.spec import read_saved_sweep, sweep_from_dict
from sweeps.planning.trial import Trial, members_of
from sweeps.reporting.results import load_trials
from sweeps.running.grouped_trial import member_run_configs, run_group
from sweeps.running.searcher import Searcher, TargetSearcher

METRICS = ("l0", "ce_loss_increase", "kl", "explained_variance", "alive_dict_elements", "n_samples")
AXES = {
    "mode": ["local", "e2e"],
    "layer": [1],
    "dict_size_to_input_ratio": [2, 3],
    "sparsity_coeff": {"local": [0.1, 1.0, 2.0], "e2e": [0.1]},
    "seed": [0, 1],
}


def grouped(tmp_path, group_size, **top) -> Plan:
    return Plan.from_spec(sweep_from_dict(tiny_sweep(tmp_path, axes=AXES, group_size=group_size, **top)))


def coeffs_of(group: dict) -> list[float]:
    return [Trial.from_config(m).sparsity_coeff for _, m in members_of(group)]


def test_group_size_1_is_one_tune_trial_per_planned_trial(tmp_path):
    plan = grouped(tmp_path, 1)
    assert plan.tune_names == plan.names and plan.tune_trials == [t.tune_config() for t in plan.trials]


def test_trials_differing_only_in_member_fields_are_chunked_in_plan_order(tmp_path):
    planned = grouped(tmp_path, 4)
    names, configs, plan = planned.tune_names, planned.tune_trials, planned.names
    members = [[n for n, _ in members_of(c)] for c in configs]
    # Every planned trial is a member of exactly one group, in plan order within a group.
    assert sorted(n for m in members for n in m) == sorted(plan)
    assert all(m == sorted(m, key=plan.index) for m in members)
    assert all(1 <= len(m) <= 4 for m in members) and len(set(names)) == len(names)
    # The seed sets the sample order (data.seed follows it): seeds never share a group; ratios and
    # coefficients do. Mode (and layer) never mix.
    local_seed0 = [n for n in plan if n.startswith("local_") and n.endswith("seed0")]
    assert members[0] == local_seed0[:4] and members[1] == local_seed0[4:]
    for m in members:
        assert len({n.split("_")[0] for n in m}) == 1 and len({n.rsplit("seed", 1)[1] for n in m}) == 1
    assert names[0] == "local_L1_group0" and coeffs_of(configs[0]) == [0.1, 1.0, 2.0, 0.1]
    again = grouped(tmp_path, 4)
    assert (again.tune_names, again.tune_trials) == (names, configs)  # deterministic


def test_a_shared_data_seed_lets_seeds_share_a_group(tmp_path):
    configs = grouped(tmp_path, 12, overrides={"data.seed": 7}).tune_trials
    assert [len(members_of(c)) for c in configs] == [12, 4]  # local (3 coeffs x 2 ratios x 2 seeds), e2e


@pytest.mark.parametrize("size,message", [(0, "group_size: must be >= 1, got 0"), (2.5, "group_size: Input should")])
def test_bad_group_size_fails_in_one_line(tmp_path, size, message):
    with pytest.raises(ConfigError) as err:
        grouped(tmp_path, size)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_member_configs_are_the_planned_trials_with_their_own_dirs_and_wandb_runs(tmp_path):
    plan = grouped(tmp_path, 3, wandb={"mode": "offline", "project": "p"})
    configs = plan.tune_trials
    group_spec, cfgs = member_run_configs(configs[0], tmp_path / "run", "abc_00000", wandb_dir=tmp_path / "artifacts")
    names = [m.name for m in group_spec.members]
    assert names == configs[0]["member_names"] and [c.output_dir.name for c in cfgs] == names
    for i, (name, cfg) in enumerate(zip(names, cfgs, strict=True)):
        planned = plan.trials[plan.names.index(name)]
        assert cfg == run_config_from_dict(
            planned.run,
            {
                "output_dir": str(tmp_path / "run" / name),
                "wandb.mode": "offline",
                "wandb.project": "p",
                "wandb.group": "tiny",
                "wandb.name": name,
                "wandb.id": f"abc_00000_m{i}",
                "wandb.dir": str(tmp_path / "artifacts" / name),  # W&B files: the trial's artifacts
            },
        )


def test_plan_prints_groups_and_sweep_yaml_keeps_its_old_form_for_group_size_1(tmp_path, capsys):
    from sweep_fixtures import write_sweep

    from sweeps import cli

    assert cli.main(["plan", str(write_sweep(tmp_path, tiny_sweep(tmp_path, group_size=2)))]) == 0
    out = capsys.readouterr().out
    assert "3 trials in 2 groups of at most 2" in out and "resources per group (one Tune trial): cpu=1" in out
    assert "group local_L1_group0 (one Tune trial):\n  0 local_L1_r2_s0.1_seed0 " in out
    assert "group e2e_L1_group1 (one Tune trial):\n  2 e2e_L1_r2_s0.1_seed0 " in out
    for size in (1, 2):
        plan = Plan.from_spec(sweep_from_dict(tiny_sweep(tmp_path, group_size=size)))
        (tmp_path / f"exp{size}").mkdir()
        (tmp_path / f"exp{size}" / "sweep.yaml").write_text(plan.saved_text())
        saved = (tmp_path / f"exp{size}" / "sweep.yaml").read_text()
        assert ("group_size" in saved) == (size > 1)
        assert read_saved_sweep(str(tmp_path / f"exp{size}")).spec.group_size == size


class FakeTune:
    """Stands in for tune.report: keeps each row, and a copy of each checkpoint (Tune persists it)."""

    def __init__(self, root):
        self.root, self.rows, self.checkpoints = root, [], []

    def __call__(self, row, checkpoint_dir):
        self.rows.append(row)
        if checkpoint_dir is not None:
            keep = self.root / f"checkpoint_{len(self.checkpoints):06d}"
            shutil.copytree(checkpoint_dir, keep)
            self.checkpoints.append(keep)


def _write_trial_dir(trial_dir, config, rows):
    (trial_dir / "params.json").write_text(json.dumps(config))
    (trial_dir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_a_group_reports_one_row_per_step_and_resumes_every_member_from_its_checkpoint(tmp_path):
    plan = grouped(tmp_path, 3)
    trials, config = plan.trials, plan.tune_trials[0]  # local, seed 0, ratio 2: coefficients 0.1, 1, 2
    names = config["member_names"]
    whole = FakeTune(tmp_path / "whole")
    run_group(config, tmp_path / "whole" / "run", None, "t0", whole)
    # Rows at the checkpoint (32 samples) and the end (64): every member in each, one checkpoint each.
    assert [(r["n_samples"], r["final"], list(r["members"])) for r in whole.rows] == [
        (32, False, names),
        (64, True, names),
    ]
    assert all(sorted(p.name for p in c.iterdir()) == sorted(names) for c in whole.checkpoints)
    for name in names:  # the last checkpoint carries each member's final metrics into the storage
        final = json.loads((whole.checkpoints[-1] / name / "metrics.json").read_text())
        assert final == whole.rows[-1]["members"][name]
        assert not (whole.checkpoints[0] / name / "metrics.json").exists()
    for name in names:  # each member equals the planned trial trained as a separate run
        params = next(t for t in trials if t.name == name)
        direct = train(run_config_from_dict(params.run, {"output_dir": str(tmp_path / "sep" / name)}), progress=False)
        assert whole.rows[-1]["members"][name] == direct

    # Killed after the first checkpoint: the retry gets that checkpoint back and every member resumes there.
    resumed = FakeTune(tmp_path / "resumed")
    run_group(config, tmp_path / "resumed" / "run", whole.checkpoints[0], "t0", resumed)
    assert [r["n_samples"] for r in resumed.rows] == [64]  # not from step 0
    assert resumed.rows[-1]["members"] == whole.rows[-1]["members"]  # bit for bit on CPU

    trial_dir = tmp_path / "exp" / config["name"]
    trial_dir.mkdir(parents=True)
    _write_trial_dir(trial_dir, config, whole.rows)
    listed = load_trials(tmp_path / "exp")
    assert sorted(t.trial_id for t in listed) == sorted(names)
    for t in listed:
        assert t.state == "finished" and t.metrics == whole.rows[-1]["members"][t.trial_id]
        assert t.mode == "local" and t.run == next(x for x in trials if x.name == t.trial_id).run


def test_members_of_a_group_are_trials_finished_errored_or_incomplete(tmp_path):
    config = grouped(tmp_path, 3).tune_trials[0]
    a, b, c = config["member_names"]
    rows = [
        {"n_samples": 32, "final": False, "members": {a: {"l0": 3.0, "final": False}, b: {"l0": 2.0}, c: {"l0": 1.0}}},
        {"n_samples": 64, "final": True, "members": {a: {"l0": 2.5, "final": True}, b: {"error": "loss is nan"}}},
    ]
    trial_dir = tmp_path / "exp" / config["name"]
    trial_dir.mkdir(parents=True)
    _write_trial_dir(trial_dir, config, rows)
    (trial_dir / "error.txt").write_text("Traceback ...\nRuntimeError: the group's process died\n")
    by_name = {t.trial_id: t for t in load_trials(tmp_path / "exp")}
    assert by_name[a].state == "finished" and by_name[a].metrics["l0"] == 2.5
    assert by_name[b].state == "errored" and by_name[b].error == "loss is nan" and by_name[b].metrics["l0"] == 2.0
    assert by_name[c].state == "errored" and by_name[c].error.startswith("RuntimeError: the group's process died")
    assert by_name[c].sparsity_coeff == 2.0 and by_name[c].dict_size_to_input_ratio == 2
    # A member whose final row Ray's result.json lost (a retry copies back the last synced copy) but
    # whose run ended is finished, from the final metrics in its part of the newest checkpoint Tune
    # persisted; an older checkpoint's do not count, and a diverged member stays errored.
    (trial_dir / "checkpoint_000000" / c).mkdir(parents=True)
    (trial_dir / "checkpoint_000000" / c / "metrics.json").write_text(json.dumps({"l0": 9.0, "final": True}))
    (trial_dir / "checkpoint_000001" / b).mkdir(parents=True)
    (trial_dir / "checkpoint_000001" / b / "diverged.txt").write_text("loss is nan\n")
    assert {t.trial_id: t.state for t in load_trials(tmp_path / "exp")}[c] == "errored"
    (trial_dir / "checkpoint_000001" / c).mkdir(parents=True)
    (trial_dir / "checkpoint_000001" / c / "metrics.json").write_text(json.dumps({"l0": 1.5, "final": True}))
    by_name = {t.trial_id: t for t in load_trials(tmp_path / "exp")}
    assert by_name[c].state == "finished" and by_name[c].metrics["l0"] == 1.5
    assert by_name[b].state == "errored"


@pytest.mark.slow
def test_members_resume_with_the_states_of_the_checkpoint_alone(tmp_path):
    """A member that diverged before the checkpoint stays stopped; one alive in the checkpoint trains on
    although an earlier attempt left a diverged.txt in its output_dir (that attempt failed later)."""
    config = grouped(tmp_path, 3).tune_trials[0]
    names = config["member_names"]
    ckpt = tmp_path / "ckpt"
    first = FakeTune(tmp_path / "first")
    run_group(config, tmp_path / "first" / "run", None, "t0", first)
    shutil.copytree(first.checkpoints[0], ckpt)
    shutil.rmtree(ckpt / names[1])
    (ckpt / names[1]).mkdir()
    (ckpt / names[1] / DIVERGED_FILE).write_text("loss is nan at step 2\n")
    stale = tmp_path / "again" / "run" / names[0] / DIVERGED_FILE
    stale.parent.mkdir(parents=True)
    stale.write_text("loss is nan at step 7 (an earlier attempt)\n")
    again = FakeTune(tmp_path / "again")
    run_group(config, tmp_path / "again" / "run", ckpt, "t0", again)
    last = again.rows[-1]
    assert last["final"] and last["members"][names[1]] == {"error": "loss is nan at step 2"}
    assert last["members"][names[0]] == first.rows[-1]["members"][names[0]]  # alive, as uninterrupted
    assert not stale.exists()  # its output_dir no longer says it diverged
    assert (tmp_path / "again" / "run" / names[1] / DIVERGED_FILE).read_text() == "loss is nan at step 2\n"


# ---- the target searcher packs a curve's proposals into grouped Tune trials ------------------------


def searcher(group_size: int) -> TargetSearcher:
    run = {"mode": "e2e", "seed": 0, "sae": {"position": "blocks.1.hook_resid_pre", "dict_size_to_input_ratio": 2.0}}
    template = {"run": {**run, "loss": {"sparsity": {"coeff": None}}}}
    groups = {k: CurveSearch(k, "l0", [20, 40, 80], tolerance=0.15, budget=10, start=1.0) for k in ("a", "b")}
    return TargetSearcher(groups, {k: template for k in groups}, group_size=group_size)


def respond(config):
    """The group's last result as Tune hands it to a searcher: flattened (``members/<name>/l0``)."""
    from ray.tune.utils import flatten_dict

    members = {
        n: {"l0": 150 * Trial.from_config(m).sparsity_coeff ** -0.7, "final": True} for n, m in members_of(config)
    }
    return flatten_dict({"final": True, "members": members})


def drive_groups(s: TargetSearcher, next_id: int, running: dict, n_steps: int, log: list) -> int:
    for _ in range(n_steps):
        while (config := s.suggest(f"g{next_id}")) not in (None, Searcher.FINISHED):
            log.append((f"g{next_id}", config["name"], coeffs_of(config)))
            running[f"g{next_id}"] = config
            next_id += 1
        if not running:
            break
        trial_id = next(iter(running))
        s.on_trial_complete(trial_id, respond(running.pop(trial_id)))
    return next_id


def test_searcher_packs_up_to_k_proposals_of_one_curve_and_records_each_member():
    s = searcher(group_size=2)
    config = s.suggest("g0")
    coeffs = coeffs_of(config)
    assert len(coeffs) == 1 and s.curves["a"].pending  # nothing known yet: the start coefficient alone
    names = config["member_names"]
    assert names == ["e2e_L1_r2_s1_seed0"] and config["name"] == "a_s1"
    s.on_trial_complete("g0", respond(config))
    assert s.curves["a"].finished == [(1.0, pytest.approx(150.0))]
    config = s.suggest("g1")  # now one proposal per open target (3), at most 2 per grouped trial
    members = members_of(config)
    assert len(members) == 2 and all(list(m) == ["run"] for _, m in members)  # the coefficient once, in the run
    assert len(s.curves["a"].pending) == 2
    s.on_trial_complete("g1", None, error=True)  # an errored group: no information for any member
    failed = [p.coeff for p in s.curves["a"].failed.values()]
    assert failed == coeffs_of(config) and not s.curves["a"].pending


def test_grouped_search_reaches_the_targets_and_save_restore_continues_it(tmp_path):
    straight: list = []
    a = searcher(group_size=3)
    drive_groups(a, 0, {}, 100, straight)
    assert all(g.is_done() for g in a.curves.values()) and a.suggest("extra") == Searcher.FINISHED
    assert all(g.is_met(t) for g in a.curves.values() for t in g.targets)
    assert max(len(c) for _, _, c in straight) == 3 and len(straight) < sum(len(c) for _, _, c in straight)

    split: list = []
    running: dict = {}
    b = searcher(group_size=3)
    next_id = drive_groups(b, 0, running, 2, split)  # the driver dies with grouped trials running
    b.save(str(tmp_path / "searcher.pkl"))
    c = searcher(group_size=3)
    c.restore(str(tmp_path / "searcher.pkl"))
    drive_groups(c, next_id, running, 100, split)
    assert split == straight
    assert {k: g.finished for k, g in c.curves.items()} == {k: g.finished for k, g in a.curves.items()}


def test_the_search_packs_seeds_of_a_curve_into_one_grouped_trial_where_they_share_the_sample_order(tmp_path):
    """Two seeds, a shared data.seed: the curves differ only in seed, so one grouped Tune trial trains
    both seeds' start proposals on one clean pass, and each member's result goes to its own curve."""
    from sweeps.planning.target_search import build_curves, packable_curves

    search = {"kind": "targets", "targets": {"l0": [10, 20]}, "start": {"e2e": 1.0}}
    spec = tiny_sweep(tmp_path, group_size=2, search=search)
    spec["axes"] = {"mode": ["e2e"], "layer": [1], "seed": [0, 1]}
    apart = Plan.from_spec(sweep_from_dict(spec))
    assert packable_curves(apart) == {"e2e_L1_r2_seed0": [], "e2e_L1_r2_seed1": []}  # sample orders differ
    spec["overrides"] = {"data.seed": 0}
    plan = Plan.from_spec(sweep_from_dict(spec))
    assert packable_curves(plan) == {"e2e_L1_r2_seed0": ["e2e_L1_r2_seed1"], "e2e_L1_r2_seed1": ["e2e_L1_r2_seed0"]}
    s = TargetSearcher(build_curves(plan), plan.curves, group_size=2, packable=packable_curves(plan))
    config = s.suggest("g0")
    assert config["member_names"] == ["e2e_L1_r2_s1_seed0", "e2e_L1_r2_s1_seed1"]
    assert config["name"] == "e2e_L1_r2_seed0_s1+e2e_L1_r2_seed1_s1"
    member_run_configs(config, tmp_path / "run")  # the library accepts them as one group
    s.on_trial_complete("g0", respond(config))
    assert [c.finished for c in s.curves.values()] == [[(1.0, pytest.approx(150.0))]] * 2
    s.save(str(tmp_path / "s.pkl"))
    again = TargetSearcher({}, {})
    again.restore(str(tmp_path / "s.pkl"))
    assert again.packable == s.packable


def test_plan_prints_which_curves_fill_a_grouped_search_trial(tmp_path, capsys):
    from sweep_fixtures import write_sweep

    from sweeps import cli

    spec = tiny_sweep(tmp_path, group_size=2, search={"kind": "targets", "targets": {"l0": [10, 20]}})
    spec["axes"] = {"mode": ["e2e"], "layer": [1], "seed": [0, 1]}
    assert cli.main(["plan", str(write_sweep(tmp_path, spec))]) == 0
    assert "places left stay empty: no two curves share a clean pass" in capsys.readouterr().out
    spec["overrides"] = {"data.seed": 0}
    assert cli.main(["plan", str(write_sweep(tmp_path, spec))]) == 0
    out = capsys.readouterr().out
    assert "places left are filled from curves sharing its clean pass:\n    e2e_L1_r2_seed0 + e2e_L1_r2_seed1\n" in out
