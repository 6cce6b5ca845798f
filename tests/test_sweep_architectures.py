"""Sweeps over SAE architectures (Ray-free): the architecture and k axes, each architecture's sparsity
knob where it belongs, names, the target search placing an integer k, and a report that compares the
modes within each architecture on one frontier plot per hook."""

from __future__ import annotations

import json
import math

import pytest
from sweep_fixtures import tiny_sweep, trial_record
from test_report import EVAL, metric_row

from e2e_sae.config import ConfigError
from sweeps.planning.curve_search import CurveSearch
from sweeps.planning.plan import Plan
from sweeps.planning.spec import sweep_from_dict
from sweeps.planning.target_search import build_curves, curves_from_trials, status_lines
from sweeps.reporting.report import compute_pareto, hook_views, write_report
from sweeps.running.searcher import TargetSearcher, config_with_coeff, trial_label

ARCH_AXES = {
    "mode": ["local", "e2e"],
    "layer": [1],
    "architecture": ["relu", "batchtopk", "jumprelu"],
    "sparsity_coeff": {"local": [1.0, 4.0], "e2e": [0.5]},
    "k": [4, 8],
}


def test_each_architecture_gets_its_own_knob_and_name(tmp_path):
    plan = Plan.from_spec(sweep_from_dict(tiny_sweep(tmp_path, axes=ARCH_AXES)))
    by_name = dict(zip(plan.names, plan.trials, strict=True))
    assert list(by_name) == [
        "local_L1_r2_s1_seed0",  # relu: today's names
        "local_L1_r2_s4_seed0",
        "local_batchtopk_L1_r2_k4_seed0",
        "local_batchtopk_L1_r2_k8_seed0",
        "local_jumprelu_L1_r2_s1_seed0",
        "local_jumprelu_L1_r2_s4_seed0",
        "e2e_L1_r2_s0.5_seed0",
        "e2e_batchtopk_L1_r2_k4_seed0",
        "e2e_batchtopk_L1_r2_k8_seed0",
        "e2e_jumprelu_L1_r2_s0.5_seed0",
    ]
    topk = by_name["e2e_batchtopk_L1_r2_k8_seed0"]
    assert topk.run["sae"]["k"] == 8 and topk.run["loss"]["sparsity"] is None and topk.sparsity_coeff is None
    assert topk.architecture == "batchtopk" and topk.k == 8
    jump = by_name["local_jumprelu_L1_r2_s4_seed0"]
    assert jump.run["sae"]["architecture"] == "jumprelu" and jump.sparsity_coeff == 4.0 and jump.k is None
    assert [c.sae.architecture for c in plan.run_configs].count("batchtopk") == 4  # each validated once


def test_jumprelu_target_l0s_are_a_grid_beside_the_coefficient(tmp_path):
    axes = {"mode": ["e2e"], "layer": [1], "architecture": ["relu", "jumprelu"], "sparsity_coeff": [1.0]}
    plan = Plan.from_spec(sweep_from_dict(tiny_sweep(tmp_path, axes={**axes, "target_l0": [4, 16]})))
    assert plan.names == ["e2e_L1_r2_s1_seed0", "e2e_jumprelu_L1_r2_s1_t4_seed0", "e2e_jumprelu_L1_r2_s1_t16_seed0"]
    relu, t4, t16 = plan.trials
    assert "target_l0" not in relu.run["loss"]["sparsity"] and relu.target_l0 is None
    assert (t4.target_l0, t16.target_l0) == (4, 16) and t16.sparsity_coeff == 1.0
    assert plan.run_configs[2].loss.sparsity.target_l0 == 16  # validated: jumprelu's quadratic penalty


@pytest.mark.parametrize(
    "axes, search, message",
    [
        ({"architecture": ["relu"], "target_l0": [4]}, None, "axes.target_l0: only jumprelu takes a target L0"),
        (
            {"architecture": ["jumprelu"], "target_l0": [4], "sparsity_coeff": None},
            {"kind": "targets", "targets": {"l0": [4]}},
            "axes.target_l0: a grid, and search.kind: targets places the coefficient",
        ),
        ({"architecture": ["jumprelu"], "target_l0": [0]}, None, "axes: target_l0: target L0s must be > 0"),
        ({"architecture": ["relu"], "k": [4]}, None, "axes.k: only the topk family"),
        ({"architecture": ["topk"], "k": [4]}, None, "axes.sparsity_coeff: ['topk'] set L0 by k"),
        ({"architecture": ["topk"], "sparsity_coeff": None}, None, "axes.k: missing; ['topk'] need k"),
        (
            {"architecture": ["batchtopk"], "k": [4], "sparsity_coeff": None},
            {"kind": "targets", "targets": {"l0": [4]}},
            "axes.k: both a k grid and search.kind: targets",
        ),
    ],
)
def test_a_knob_where_it_does_not_belong_fails_in_one_line(tmp_path, axes, search, message):
    spec = tiny_sweep(tmp_path)
    spec["axes"].update(axes)
    if spec["axes"].get("sparsity_coeff") is None:
        spec["axes"].pop("sparsity_coeff", None)
    if search:
        spec["search"] = search
    with pytest.raises(ConfigError) as err:
        sweep_from_dict(spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_grouped_topk_trials_differ_only_in_k(tmp_path):
    plan = Plan.from_spec(sweep_from_dict(tiny_sweep(tmp_path, axes=ARCH_AXES, group_size=4)))
    groups = {g["name"]: g["member_names"] for g in plan.tune_trials}
    assert groups["local_batchtopk_L1_group1"] == ["local_batchtopk_L1_r2_k4_seed0", "local_batchtopk_L1_r2_k8_seed0"]
    assert all(len({n.split("_L")[0] for n in members}) == 1 for members in groups.values())  # no mixing


# ---- the target search places k ----------------------------------------------------------------


def topk_l0(k: float) -> float:
    """A BatchTopK SAE's L0 is about its k (a little below: the eval threshold)."""
    return 0.9 * k


def test_the_search_places_integer_k_toward_l0_targets_and_never_tries_one_twice():
    curve = CurveSearch("e2e_batchtopk_L1", "l0", [10, 40, 150], tolerance=0.1, budget=12, start=32.0, knob="k")
    tried: list[float] = []
    while proposals := curve.proposals():
        for i, p in enumerate(proposals):
            assert p.coeff == int(p.coeff) >= 1
            tried.append(p.coeff)
            curve.start_trial(f"t{len(tried)}_{i}", p)
        for trial_id, p in list(curve.pending.items()):
            curve.record(trial_id, topk_l0(p.coeff))
    assert all(curve.is_met(t) for t in curve.targets), curve.summary()
    assert len(set(tried)) == len(tried) and len(tried) <= 8


def test_ce_targets_fall_with_k_and_adjacent_integers_settle():
    """CE-loss increase falls as k rises (the other way from a coefficient); a target between two
    neighbouring k is settled by the closer one, not proposed again."""
    curve = CurveSearch("local_topk_L1", "ce_loss_increase", [0.3], tolerance=0.01, budget=12, start=8.0, knob="k")
    tried = []
    while proposals := curve.proposals():
        for p in proposals:
            tried.append(p.coeff)
            curve.start_trial(str(len(tried)), p)
            curve.record(str(len(tried)), 2.4 / p.coeff)  # 0.3 lies between k = 7 (0.343) and 8 (0.3) ... ~8
    assert tried[0] == 8.0 and curve.is_done() and len(set(tried)) == len(tried)
    assert curve.standing(0.3).state in ("met", "settled")


def test_the_searcher_writes_k_into_the_run_config_and_names_it(tmp_path):
    spec = tiny_sweep(tmp_path)
    spec["axes"] = {"mode": ["local"], "layer": [1], "architecture": ["topk"]}
    spec["search"] = {"kind": "targets", "targets": {"l0": [4, 8]}, "start_k": {"local": 6}}
    plan = Plan.from_spec(sweep_from_dict(spec))
    assert plan.names == ["local_topk_L1_r2_seed0"] and plan.trials[0].k == 6
    curves = build_curves(plan)
    (curve,) = curves.values()
    assert curve.knob == "k" and curve.start == 6.0
    searcher = TargetSearcher(curves, plan.curves)
    config = searcher.suggest("t0")
    assert config["run"]["sae"]["k"] == 6 and config["run"]["loss"]["sparsity"] is None
    assert trial_label(config) == "local_topk_L1_r2_k6_seed0"
    searcher.on_trial_complete("t0", {"l0": 6.0, "final": True})
    members = TargetSearcher(build_curves(plan), plan.curves, group_size=2)
    grouped = members.suggest("g0")
    assert grouped["name"] == "local_topk_L1_r2_seed0_k6"
    again = config_with_coeff(plan.curves["local_topk_L1_r2_seed0"], curve.proposals()[0], "k")
    assert isinstance(again["run"]["sae"]["k"], int)
    # status, from the trials as the report reads them back: the searcher's k, the curve's verdict
    done = trial_record("local", 0.0, trial_id="t0", state="finished", metrics={"l0": 6.0, "ce_loss_score": 0.8})
    done.run["sae"].update(architecture="topk", k=6)
    done.run["loss"]["sparsity"] = None
    (status,) = curves_from_trials(plan, [done]).values()
    assert status.finished == [(6.0, 6.0)]
    assert any(line.startswith("local_topk_L1_r2_seed0 ") for line in status_lines(plan, [done]))


# ---- the report: modes compared within each architecture ------------------------------------------


def _trial(tid, mode, arch, knob, l0, ce):
    t = trial_record(mode, knob if arch != "batchtopk" else 0.0, trial_id=tid, state="finished")
    t.run["sae"]["architecture"] = arch
    if arch == "batchtopk":
        t.run["sae"]["k"], t.run["loss"]["sparsity"] = int(knob), None
    t.metrics = {**EVAL, "l0": l0, "alive_dict_elements": 500, "ce_loss_increase": ce, "ce_loss_score": 0.8}
    return t


TRIALS = [
    _trial("r_local_1", "local", "relu", 1.0, 100, 0.1),
    _trial("r_local_4", "local", "relu", 4.0, 40, 0.3),
    _trial("r_e2e_1", "e2e", "relu", 1.0, 50, 0.1),
    _trial("r_e2e_4", "e2e", "relu", 4.0, 20, 0.3),
    _trial("b_local_16", "local", "batchtopk", 16, 16, 0.4),
    _trial("b_local_64", "local", "batchtopk", 64, 64, 0.12),
    _trial("b_e2e_16", "e2e", "batchtopk", 16, 16, 0.2),
    _trial("b_e2e_64", "e2e", "batchtopk", 64, 64, 0.05),
]
META = {"sweep": "t", "model": None, "eval_tokens": [], "n_ctx": [], "match_at": [], "search_targets": {}}


def test_pareto_json_compares_the_modes_within_each_architecture():
    doc = compute_pareto(TRIALS, META)
    assert doc["architectures"] == ["relu", "batchtopk"]
    h = doc["hooks"]["blocks.1.hook_resid_pre"]
    views = dict(hook_views(h))
    assert list(views) == ["relu", "batchtopk"] and "modes" not in h
    relu, topk = views["relu"], views["batchtopk"]
    assert {p["trial_id"] for p in topk["modes"]["e2e"]["frontiers"]["l0"]} == {"b_e2e_16", "b_e2e_64"}
    assert topk["modes"]["e2e"]["frontiers"]["l0"][0]["k"] == 16
    # each architecture's matched level is its own: relu's frontiers overlap at 0.1, batchtopk's at 0.12
    assert relu["matched"]["ce_loss_increase"] == pytest.approx(0.1)
    assert topk["matched"]["ce_loss_increase"] == pytest.approx(0.12)
    assert relu["matched"]["ratios"]["e2e/local"]["l0"] == pytest.approx(0.5)
    assert topk["matched"]["ratios"]["e2e/local"]["l0"] < 1  # e2e needs a smaller k for the same CE
    single = compute_pareto(TRIALS[:4], META)
    assert single["architectures"] == ["relu"] and "modes" in single["hooks"]["blocks.1.hook_resid_pre"]


def test_the_report_draws_every_mode_and_architecture_on_one_plot_per_hook(tmp_path):
    exp = tmp_path / "exp"
    for t in TRIALS:
        d = exp / t.trial_id
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps(t.tune_config()))
        row = metric_row(t.metrics["l0"], 500, t.metrics["ce_loss_increase"], 64, True, 0)
        (d / "result.json").write_text(json.dumps(row) + "\n")
    report = write_report(exp)
    out = report.parent
    assert sorted(p.name for p in out.glob("frontier_*.png")) == ["frontier_blocks.1.hook_resid_pre.png"]
    assert (out / "architectures.png").is_file()  # and the architectures compared with each other
    md = report.read_text()
    assert "### relu: the modes compared within this architecture" in md
    assert "### batchtopk: the modes compared within this architecture" in md
    assert "| e2e | L0 | b_e2e_16 | k 16 |" in md
    assert "### Architectures compared at matched CE-loss increase (L0 ratio to relu)" in md
    assert "![architectures](architectures.png)" in md
    assert math.isfinite(json.loads((out / "pareto.json").read_text())["hooks"]["blocks.1.hook_resid_pre"]["layer"])
    header = (out / "trials.csv").read_text().splitlines()[0].split(",")
    assert "architecture" in header and "k" in header


def test_k_is_proposed_inside_the_dictionary_and_a_target_past_it_is_out_of_reach():
    """n_dict 256, target L0 240 from k 32: it proposed 32, 259 and 736 (both error: k >= n_dict), 91,
    then said "budget spent ... raise search.max_trials_per_curve"."""
    curve = CurveSearch("e2e_topk_L1", "l0", [240], tolerance=0.15, budget=4, start=32.0, knob="k", n_dict=256)
    tried = []
    while proposals := curve.proposals():
        for p in proposals:
            tried.append(p.coeff)
            curve.start_trial(str(len(tried)), p)
            curve.record(str(len(tried)), {"l0": 0.95 * p.coeff, "ce_loss_score": 0.8, "n_dict_elements": 256})
    assert all(1 <= k < 256 for k in tried) and curve.is_met(240), (tried, curve.summary())
    short = CurveSearch("e2e_topk_L1", "l0", [250], tolerance=0.02, budget=6, start=32.0, knob="k", n_dict=256)
    while proposals := short.proposals():
        for p in proposals:
            short.start_trial(str(p.coeff), p)
            short.record(str(p.coeff), {"l0": 0.9 * p.coeff, "ce_loss_score": 0.8})
    (row,) = short.summary()
    assert row["state"] == "out of reach" and "the largest k, 255 (the dictionary has 256 elements)" in row["reason"]
    assert "axes.dict_size_to_input_ratio" in row["reason"] and short.n_started < short.budget


def test_an_l0_target_at_or_above_the_dictionary_is_out_of_reach_without_a_trial():
    curve = CurveSearch("local_L1", "l0", [20, 5000], tolerance=0.15, budget=4, start=1.0, n_dict=1024)
    assert curve.standing(5000).state == "out of reach"
    assert "active elements of the 1024 in the dictionary" in curve.standing(5000).reason
    assert [p.target for p in curve.proposals()] == [20]
