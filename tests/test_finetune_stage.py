"""A sweep's fine-tune stages, without Ray: the stage spec's one-line errors, the children a finished
trial gets (their run configs, names and frontier series), what ``status`` and the report say of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sweep_fixtures import tiny_sweep, trial_record

from e2e_sae.config import ConfigError, run_config_from_dict
from sweeps.frontier import FrontPoint, ce_at_l0
from sweeps.planning.finetune_stage import children, children_per_parent, status_lines
from sweeps.planning.plan import Plan
from sweeps.planning.spec import sweep_from_dict
from sweeps.planning.trial import Trial, group_config
from sweeps.reporting.finetune_table import finetune_comparison, finetune_lines
from sweeps.reporting.results import load_trials

KL = {"name": "kl", "parent_modes": ["local"], "modes": ["e2e"], "fractions": [0.1, 0.5]}


def staged(tmp_path: Path, *stages: dict) -> dict:
    return tiny_sweep(tmp_path, finetune=list(stages))


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([{**KL, "from": "nope"}], "finetune.0.from: no stage 'nope' before this one; use one of ['main']"),
        ([{**KL, "parent_modes": ["e2e+ds"]}], "finetune.0.parent_modes: ['e2e+ds'] are not trained by stage 'main'"),
        ([{**KL, "fractions": [0]}], "finetune.0.fractions: [0.0]: a fine-tune is a fraction in (0, 1]"),
        ([{**KL, "fractions": [1.5]}], "above 1 is longer than the parent"),
        ([KL, KL], "finetune.1.name: 'kl' names two stages"),
        ([{**KL, "name": "main"}], "finetune.0.name: "),
        ([{**KL, "modes": ["e3e"]}], "finetune.0.modes.0: "),
        ([{**KL, "overrides": {"sae.position": "blocks.2.hook_resid_pre"}}], "finetune.0.overrides: sets sae.position"),
        (
            [{**KL, "overrides": {"train.lr": -1}}],
            "finetune.0 (kl): child local_L1_r2_s0.1_seed0_kl_e2e_10pct: train.lr",
        ),
        (
            [{**KL, "overrides": {"train.effective_batch_size": 128}}],  # one step of 128 > the parent's 64
            "finetune.0.overrides: child local_L1_r2_s0.1_seed0_kl_e2e_10pct: a fine-tune of 128 samples (1 step(s) "
            "of 128) is longer than its parent's 64; drop or lower the train.* overrides",
        ),
    ],
)
def test_a_stage_that_cannot_work_is_one_line_before_any_compute(tmp_path, stages, message):
    with pytest.raises(ConfigError) as err:
        Plan.from_spec(sweep_from_dict(staged(tmp_path, *stages)))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_finished_parent_gets_one_child_per_mode_and_length(tmp_path):
    spec = sweep_from_dict(staged(tmp_path, KL, {"name": "ds", "from": "kl", "modes": ["e2e+ds"], "fractions": [1]}))
    plan = Plan.from_spec(spec)
    local, e2e = plan.trials[1], plan.trials[2]  # local coeff 1, e2e coeff 0.1
    assert (local.mode, e2e.mode) == ("local", "e2e")
    assert children(spec.finetune, e2e.tune_config(), "e2e_trial") == []  # parent_modes: local only
    kids = children(spec.finetune, local.tune_config(), "local_dir")
    assert [Trial.from_config(k).name for k in kids] == [
        "local_L1_r2_s1_seed0_kl_e2e_10pct",
        "local_L1_r2_s1_seed0_kl_e2e_50pct",
    ]
    run = kids[1]["run"]
    assert run["mode"] == "e2e" and run["train"]["n_samples"] == 32  # half the parent's 64
    assert run["train"]["warmup_samples"] == 3  # 10% of its own samples
    assert run["loss"] == {"sparsity": {"coeff": 1.0}, "out_to_in": {"coeff": 1.0}, "balance_kl_to_mse": True}
    assert kids[1]["finetune"] == {
        "stage": "kl",
        "parent": "local_L1_r2_s1_seed0",
        "parent_trial": "local_dir",
        "member": None,
        "parent_mode": "local",
        "fraction": 0.5,
    }
    cfg = run_config_from_dict(run)  # the mode's preset filled the KL term
    assert cfg.loss.active() == {"out_to_in": 1.0, "logits_kl": 1.0} and cfg.loss.balance_kl_to_mse
    assert Trial.from_config(kids[1]).series == "local -> e2e, 50%"
    # a chained stage fine-tunes the fine-tune
    grandkids = children(spec.finetune, kids[1], "kid_dir")
    assert [Trial.from_config(k).name for k in grandkids] == ["local_L1_r2_s1_seed0_kl_e2e_50pct_ds_e2e+ds_100pct"]
    assert Trial.from_config(grandkids[0]).series == "local -> e2e, 50% -> e2e+ds, 100%"
    assert children_per_parent(spec.finetune) == 2 + 2


def test_a_childs_length_is_a_fraction_of_what_its_parent_trains_not_its_configured_n_samples(tmp_path):
    """Parents configured for 100 samples train 12 steps of 8 = 96: a child of all of it trains 96 (the
    library refuses 100 as longer than the parent's checkpoint), half of it 48 (not 50)."""
    sweep = staged(tmp_path, {**KL, "fractions": [0.5, 1.0]})
    sweep["run"]["train"]["n_samples"] = 100
    spec = sweep_from_dict(sweep)
    plan = Plan.from_spec(spec)  # the children validate against their parents: plan passes
    kids = children(spec.finetune, plan.trials[0].tune_config(), "local_dir")
    assert [k["run"]["train"]["n_samples"] for k in kids] == [48, 96]


def test_a_grouped_parent_gives_children_of_its_finished_members_only(tmp_path):
    spec = sweep_from_dict(staged(tmp_path, KL))
    plan = Plan.from_spec(spec)
    group = group_config("local_L1_group0", [t.tune_config() for t in plan.trials[:2]], ["a", "b"])
    kids = children(spec.finetune, group, "local_L1_group0", finished={"b"})
    assert {k["finetune"]["member"] for k in kids} == {"b"}
    assert {k["finetune"]["parent_trial"] for k in kids} == {"local_L1_group0"}


def test_status_lists_children_by_parent_and_skips_those_of_an_errored_parent(tmp_path):
    spec = sweep_from_dict(staged(tmp_path, KL))
    plan = Plan.from_spec(spec)
    ok, bad = plan.trials[0], plan.trials[1]
    ok.state, bad.state, bad.error = "finished", "errored", "TrainingDiverged: loss is inf"
    kid = Trial.from_config(children(spec.finetune, ok.tune_config(), "x")[0], state="finished")
    lines = status_lines(spec.finetune, [ok, bad, kid])
    assert lines[0] == "fine-tune stage kl (from main, parents: all):"
    assert "  local_L1_r2_s0.1_seed0: finished -> local_L1_r2_s0.1_seed0_kl_e2e_10pct finished" in lines
    assert (
        "  local_L1_r2_s1_seed0: errored -> skipped local_L1_r2_s1_seed0_kl_e2e_10pct, "
        "local_L1_r2_s1_seed0_kl_e2e_50pct (parent error: TrainingDiverged: loss is inf)"
    ) in lines


def test_the_finetune_table_reads_each_frontier_at_the_parents_l0_and_the_gap_closed():
    """local: CE 1.0 at L0 10, 0.5 at L0 100; e2e 0.6 / 0.1; the 5% fine-tune 0.8 / 0.3: it closes
    half of the gap at both levels, 10% of the gap per 1% extra samples."""

    def trial(name, series_mode, l0, ce, finetune=None, n=1000, t=100.0):
        tr = trial_record(series_mode, l0 / 10, trial_id=name, state="finished", finetune=finetune, wall_s=t)
        tr.metrics = {"l0": l0, "ce_loss_increase": ce, "n_samples": n}
        if finetune:
            tr.metrics["parent_n_samples"] = 1000
        return tr

    ft = {"stage": "kl", "parent_mode": "local", "fraction": 0.05, "member": None, "parent_trial": "p"}
    local = [trial("l1", "local", 10, 1.0), trial("l2", "local", 100, 0.5)]
    e2e = [trial("e1", "e2e", 10, 0.6, t=300.0), trial("e2", "e2e", 100, 0.1, t=300.0)]
    kids = [
        trial("k1", "e2e", 10, 0.8, {**ft, "parent": local[0].name}, n=50, t=20.0),
        trial("k2", "e2e", 100, 0.3, {**ft, "parent": local[1].name}, n=50, t=20.0),
    ]
    trials = local + e2e + kids
    fronts = {
        s: {"l0": [FrontPoint(t.metrics["l0"], t.metrics["ce_loss_increase"], t) for t in trials if t.series == s]}
        for s in ("local", "e2e", "local -> e2e, 5%")
    }
    assert ce_at_l0(fronts["e2e"]["l0"], 31.622776601683793) == pytest.approx(0.35)  # halfway in log L0
    assert ce_at_l0(fronts["e2e"]["l0"], 5) is None
    doc = finetune_comparison(fronts, trials)
    assert doc is not None
    assert [row["gap_closed"]["local -> e2e, 5%"] for row in doc["levels"]] == pytest.approx([0.5, 0.5])
    assert doc["series"]["local -> e2e, 5%"]["samples"] == 1050
    assert doc["series"]["local -> e2e, 5%"]["wall_s"] == 120  # the child's 20 s and its parent's 100 s
    assert doc["full"]["e2e"] == {"samples": 1000, "wall_s": 300}
    text = "\n".join(finetune_lines(doc))
    assert "| 10 | 1 | 0.6 | 0.8 (50%) |" in text
    assert "closes 50% of the local-to-e2e gap on average over 2 L0 levels (50% to 50%), 10.0% per 1% extra" in text
    assert "1050 samples in all, parent included, 120 s of trial time (full e2e: 1000 samples, 300 s)" in text


def _finish(searcher, trial_id, l0, ce, score=0.9):
    searcher.on_trial_complete(trial_id, {"final": True, "l0": l0, "ce_loss_increase": ce, "ce_loss_score": score})


def _frontier_searcher(tmp_path, coeffs):
    """A searcher of a ``parents: frontier`` stage over local trials of ``coeffs`` (and one e2e), every
    main trial started: (searcher, plan, trial ids)."""
    from sweeps.running.stages import GridSearcher, StagedSearcher

    sweep = staged(tmp_path, {**KL, "fractions": [0.5], "parents": "frontier"})
    sweep["axes"]["sparsity_coeff"]["local"] = coeffs
    spec = sweep_from_dict(sweep)
    plan = Plan.from_spec(spec)
    searcher = StagedSearcher(GridSearcher([t.tune_config() for t in plan.trials]), spec.finetune)
    ids = [f"t{i}" for i in range(len(plan.trials))]
    assert [Trial.from_config(searcher.suggest(i)).name for i in ids] == plan.names
    return searcher, plan, ids


def _names(configs):
    return sorted(Trial.from_config(c).name for c in configs)


def _write_trial(exp: Path, name: str, config: dict, rows: list[dict]) -> None:
    (exp / name).mkdir(parents=True)
    (exp / name / "params.json").write_text(json.dumps(config))
    (exp / name / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_grouped_trials_get_their_share_of_the_group_time_in_the_finetune_table(tmp_path):
    """Two local members in one Tune trial of 200 s, two e2e members in one of 600 s, a 20 s fine-tune
    of each local member: each member is given its group's time over its 2 members (its own result
    entry has no time), so a fine-tune costs 100 + 20 s and full e2e 300 s; the note says the rule."""
    exp = tmp_path / "exp"
    points = {"local": [(10, 1.0), (100, 0.5)], "e2e": [(10, 0.6), (100, 0.1)]}
    parents = {}
    for mode, seconds in (("local", 200.0), ("e2e", 600.0)):
        members = [trial_record(mode, l0 / 10, state="planned") for l0, _ in points[mode]]
        names = [m.name for m in members]
        final = {n: {"l0": l0, "ce_loss_increase": ce, "n_samples": 1000, "final": True}
                 for n, (l0, ce) in zip(names, points[mode], strict=True)}  # fmt: skip
        config = group_config(f"{mode}_group0", [m.tune_config() for m in members], names)
        _write_trial(exp, f"{mode}_group0", config, [{"final": True, "time_total_s": seconds, "members": final}])
        parents[mode] = names
    ft = {"stage": "kl", "parent_mode": "local", "fraction": 0.05, "parent_trial": "local_group0"}
    for parent, (l0, ce) in zip(parents["local"], [(10, 0.8), (100, 0.3)], strict=True):
        kid = trial_record("e2e", l0 / 10, finetune={**ft, "parent": parent, "member": parent})
        row = {"l0": l0, "ce_loss_increase": ce, "n_samples": 50, "parent_n_samples": 1000, "final": True}
        _write_trial(exp, kid.name, kid.tune_config(), [{**row, "time_total_s": 20.0}])
    trials = load_trials(exp)
    assert sorted(t.wall_s for t in trials) == [20.0, 20.0, 100.0, 100.0, 300.0, 300.0]
    fronts = {
        s: {"l0": [FrontPoint(t.metrics["l0"], t.metrics["ce_loss_increase"], t) for t in trials if t.series == s]}
        for s in ("local", "e2e", "local -> e2e, 5%")
    }
    doc = finetune_comparison(fronts, trials)
    assert doc is not None and doc["series"]["local -> e2e, 5%"]["wall_s"] == 120
    assert doc["full"] == {"local": {"samples": 1000, "wall_s": 100}, "e2e": {"samples": 1000, "wall_s": 300}}
    text = "\n".join(finetune_lines(doc))
    assert "1050 samples in all, parent included, 120 s of trial time (full e2e: 1000 samples, 300 s)" in text
    assert "a member of a grouped Tune trial is given its group's time divided by the group's members" in text


def test_the_staged_searcher_starts_children_before_further_main_trials_and_survives_a_restore(tmp_path):
    from sweeps.running.stages import GridSearcher, StagedSearcher

    spec = sweep_from_dict(staged(tmp_path, {**KL, "fractions": [0.5]}))
    plan = Plan.from_spec(spec)
    searcher = StagedSearcher(GridSearcher([t.tune_config() for t in plan.trials]), spec.finetune)
    searcher.set_max_concurrency(1)
    first = searcher.suggest("t0")
    assert first["run"]["mode"] == "local" and searcher.suggest("t1") is None  # at the concurrency limit
    _finish(searcher, "t0", 10.0, 0.5)
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    restored = StagedSearcher(GridSearcher([]), [])
    restored.restore(str(path))
    for s in (searcher, restored):
        child = s.suggest("t1")
        assert Trial.from_config(child).name == "local_L1_r2_s0.1_seed0_kl_e2e_50pct"  # before main trial 2
        _finish(s, "t1", 11.0, 0.4)  # a child has no children here (no stage from kl)
        assert Trial.from_config(s.suggest("t2")).name == "local_L1_r2_s1_seed0"


def test_frontier_parents_are_picked_once_every_main_trial_has_ended(tmp_path):
    from sweeps.running.stages import GridSearcher, StagedSearcher

    sweep = staged(tmp_path, {**KL, "fractions": [0.5], "parents": "frontier"})
    sweep["axes"]["sparsity_coeff"]["local"] = [0.1, 1.0, 3.0]
    spec = sweep_from_dict(sweep)
    plan = Plan.from_spec(spec)
    searcher = StagedSearcher(GridSearcher([t.tune_config() for t in plan.trials]), spec.finetune)
    ids = [f"t{i}" for i in range(len(plan.trials))]
    configs = [searcher.suggest(i) for i in ids]
    assert [Trial.from_config(c).name for c in configs] == plan.names
    # local: coeff 0.1 (L0 30, CE 0.2) and 3 (L0 10, CE 0.6) on the frontier; coeff 1 (L0 20, CE 0.7) is not
    for trial_id, (l0, ce) in zip(ids, [(30, 0.2), (20, 0.7), (10, 0.6), (25, 0.3)], strict=True):
        assert searcher.suggest("early") is None  # no child while a main trial runs
        _finish(searcher, trial_id, l0, ce)
    kids = [searcher.suggest("k0"), searcher.suggest("k1"), searcher.suggest("k2")]
    assert sorted(Trial.from_config(k).name for k in kids[:2]) == [
        "local_L1_r2_s0.1_seed0_kl_e2e_50pct",
        "local_L1_r2_s3_seed0_kl_e2e_50pct",
    ]
    assert kids[2] is None  # the children run; FINISHED once they end
    _finish(searcher, "k0", 1, 1)
    _finish(searcher, "k1", 1, 1)
    assert searcher.suggest("k2") == "FINISHED"


def test_frontier_parents_need_the_main_stage(tmp_path):
    stages = [KL, {"name": "again", "from": "kl", "modes": ["e2e"], "fractions": [1], "parents": "frontier"}]
    with pytest.raises(ConfigError, match="finetune.1.parents: frontier picks among the main trials"):
        sweep_from_dict(staged(tmp_path, *stages))


def test_frontier_stages_fine_tune_no_trial_the_report_keeps_off_its_frontiers(tmp_path):
    """Of three trials on one curve, the one at L0 0.4 with CE-loss score 0.02 is on the raw (L0, CE)
    frontier (the sparsest), but the report calls it barely better than zero ablation: no children."""
    from sweeps.reporting.report import compute_pareto

    searcher, plan, ids = _frontier_searcher(tmp_path, [0.1, 1.0, 30.0])
    ends = [(30, 0.2, 0.9), (10, 0.6, 0.5), (0.4, 5.0, 0.02), (25, 0.3, 0.9)]
    for trial_id, end in zip(ids, ends, strict=True):
        _finish(searcher, trial_id, *end)
    kids = [searcher.suggest("k0"), searcher.suggest("k1"), searcher.suggest("k2")]
    assert kids[2] is None
    assert _names(kids[:2]) == ["local_L1_r2_s0.1_seed0_kl_e2e_50pct", "local_L1_r2_s1_seed0_kl_e2e_50pct"]
    # the report's frontier of the same trials: the same two local trials
    trials = []
    for i, (t, (l0, ce, score)) in enumerate(zip(plan.trials, ends, strict=True)):
        t.trial_id, t.state = f"t{i}", "finished"
        t.metrics = {"l0": l0, "alive_dict_elements": 1, "ce_loss_increase": ce, "ce_loss_score": score}
        trials.append(t)
    doc = compute_pareto(trials, {})
    front = doc["hooks"]["blocks.1.hook_resid_pre"]["modes"]["local"]["frontiers"]["l0"]
    assert sorted(p["trial_id"] for p in front) == ["t0", "t1"]
    lines = status_lines(plan_stages(tmp_path), trials)
    assert any(
        line.startswith("  local_L1_r2_s30_seed0: finished, degenerate (CE-loss score 0.02 < 0.1") for line in lines
    ), lines


def plan_stages(tmp_path):
    return sweep_from_dict(staged(tmp_path, {**KL, "fractions": [0.5], "parents": "frontier"})).finetune


def test_frontier_stages_reconsider_after_a_resume_reruns_an_errored_main_trial(tmp_path):
    """local coeff 1 errors; the frontier (coeffs 0.1 and 3) is fine-tuned. After a resume re-runs coeff 1
    to the end, at (L0 20, CE 0.15) it is on the frontier and gets its child; coeff 0.1 (L0 30, CE 0.2)
    drops off, keeping the child it had; no child starts twice."""
    from sweeps.running.stages import GridSearcher, StagedSearcher

    searcher, plan, ids = _frontier_searcher(tmp_path, [0.1, 1.0, 3.0])
    _finish(searcher, "t0", 30, 0.2)
    searcher.on_trial_complete("t1", None, error=True)
    _finish(searcher, "t2", 10, 0.6)
    _finish(searcher, "t3", 25, 0.3)
    first = [searcher.suggest("k0"), searcher.suggest("k1")]
    assert _names(first) == ["local_L1_r2_s0.1_seed0_kl_e2e_50pct", "local_L1_r2_s3_seed0_kl_e2e_50pct"]
    _finish(searcher, "k0", 1, 1)
    _finish(searcher, "k1", 1, 1)
    assert searcher.suggest("k2") == "FINISHED"
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))

    resumed = StagedSearcher(GridSearcher([]), [])
    resumed.restore(str(path))  # sweeps resume: t1 runs again under its id
    assert resumed.suggest("r0") is None  # no frontier child while a main trial runs
    _finish(resumed, "t1", 20, 0.15)
    again = resumed.suggest("r0")
    assert _names([again]) == ["local_L1_r2_s1_seed0_kl_e2e_50pct"]
    assert resumed.suggest("r1") is None
    _finish(resumed, "r0", 1, 1)
    assert resumed.suggest("r1") == "FINISHED"

    # status: the parent that dropped off keeps its child, named as such, and nothing is an error
    ends = {"t0": (30, 0.2), "t1": (20, 0.15), "t2": (10, 0.6), "t3": (25, 0.3)}
    trials = []
    for trial_id, t in zip(ids, plan.trials, strict=True):
        t.state, t.metrics = "finished", {"l0": ends[trial_id][0], "ce_loss_increase": ends[trial_id][1]}
        trials.append(t)
    kids = [Trial.from_config(c, state="finished") for c in [*first, again]]
    lines = status_lines(plan_stages(tmp_path), trials + kids)
    assert (
        "  local_L1_r2_s0.1_seed0: finished, no longer on its frontier -> local_L1_r2_s0.1_seed0_kl_e2e_50pct finished"
    ) in lines
    assert "  local_L1_r2_s1_seed0: finished -> local_L1_r2_s1_seed0_kl_e2e_50pct finished" in lines


def test_a_childs_parent_is_copied_from_the_storage_and_recorded_as_stored_there(tmp_path):
    """fetch_parent copies the parent trial's last checkpoint (a grouped member's part of it) into the
    child's scratch directory, and names the stored checkpoint as what the child's metrics record."""
    from types import SimpleNamespace

    import pyarrow.fs

    from sweeps.running.stages import fetch_parent, storage_uri

    exp = tmp_path / "exp"
    for n in (1, 2):
        (exp / "group0" / f"checkpoint_00000{n}" / "b").mkdir(parents=True)
        (exp / "group0" / f"checkpoint_00000{n}" / "b" / "checkpoint.pt").write_text(str(n))
    storage = SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(), experiment_fs_path=str(exp))
    spec = sweep_from_dict(staged(tmp_path, KL))
    group = group_config("group0", [t.tune_config() for t in Plan.from_spec(spec).trials[:2]], ["a", "b"])
    kid = children(spec.finetune, group, "group0", finished={"b"})[0]
    fetched = fetch_parent(kid, storage, tmp_path / "scratch" / "parent")
    assert fetched["run"]["finetune"]["parent"] == str(tmp_path / "scratch" / "parent")
    assert (tmp_path / "scratch" / "parent" / "checkpoint.pt").read_text() == "2"
    assert fetched["run"]["finetune"]["copied_from"] == str(exp / "group0" / "checkpoint_000002" / "b")
    run_config_from_dict(fetched["run"])  # a run config the library takes
    s3 = SimpleNamespace(type_name="s3")
    assert storage_uri(s3, "bucket/exp/t/checkpoint_000002") == "s3://bucket/exp/t/checkpoint_000002"
