"""The target search on synthetic responses, without Ray: it reaches the targets in few trials, never
proposes a coefficient twice, survives failed trials and noise, stops at its budget, resumes exactly, and
at the edges (dead SAEs, floors, errored starts, re-run errored trials) meets what is reachable and says
why the rest is not."""

from __future__ import annotations

import math
import random

import pytest
from sweep_fixtures import tiny_sweep, trial_record

from sweeps.planning.curve_search import DUPLICATE, CurveSearch, search_value
from sweeps.planning.plan import Plan
from sweeps.planning.spec import sweep_from_dict
from sweeps.planning.target_search import build_curves, curves_from_trials, total_budget
from sweeps.planning.trial import Trial
from sweeps.reporting.report import compute_pareto
from sweeps.running.searcher import Searcher, TargetSearcher, TargetSearchGenerator, target_search_alg, trial_label


def l0_response(noise: float = 0.03, seed: int = 0):
    """L0 = 150 c^-0.7, times log-normal noise: monotone in expectation, wiggly per trial."""
    rng = random.Random(seed)
    return lambda c: 150 * c**-0.7 * math.exp(rng.gauss(0, noise))


def run(curve: CurveSearch, response, fail=lambda c: False, max_rounds: int = 50) -> list[float]:
    """Drive a curve as Tune would (all proposals start, then all finish); returns the coefficients tried."""
    tried, n = [], 0
    for _ in range(max_rounds):
        proposals = curve.proposals()
        if not proposals:
            assert curve.is_done()
            return tried
        for p in proposals:
            n += 1
            curve.start_trial(f"t{n}", p)
            tried.append(p.coeff)
        for trial_id, p in list(curve.pending.items()):
            value = response(p.coeff)  # a metric value, or a trial's final metrics (dead SAEs are told by them)
            curve.record(trial_id, None if fail(p.coeff) else value)
    raise AssertionError("the search did not stop")


def no_duplicates(coeffs: list[float]) -> bool:
    logs = sorted(math.log(c) for c in coeffs)
    return all(b - a >= DUPLICATE for a, b in zip(logs, logs[1:], strict=False))


def test_reaches_every_l0_target_within_tolerance_in_few_trials():
    curve = CurveSearch("e2e_L1", "l0", [20, 40, 80, 160], tolerance=0.15, budget=12, start=1.0)
    tried = run(curve, l0_response())
    assert all(curve.is_met(t) for t in curve.targets)
    assert len(tried) <= 9 and no_duplicates(tried) and all(c > 0 for c in tried)


def test_ce_loss_increase_targets_rise_with_the_coefficient():
    curve = CurveSearch("local_L2", "ce_loss_increase", [0.1, 0.2, 0.4], tolerance=0.1, budget=12, start=3.0)
    tried = run(curve, lambda c: 0.05 * c**1.3)
    assert all(curve.is_met(t) for t in curve.targets) and len(tried) <= 9 and no_duplicates(tried)


def test_failed_trials_carry_no_information_and_are_not_retried():
    curve = CurveSearch("e2e_L1", "l0", [20, 80], tolerance=0.15, budget=12, start=1.0)
    calls = []

    def fail(c):  # the second and third trials error (after Tune's own retries)
        calls.append(c)
        return len(calls) in (2, 3)

    tried = run(curve, l0_response(), fail=fail)
    assert [p.coeff for p in curve.failed.values()] == calls[1:3] and all(curve.is_met(t) for t in curve.targets)
    assert no_duplicates(tried) and len(tried) <= 10


def test_budget_is_a_hard_limit_and_unreachable_targets_stay_unmet():
    curve = CurveSearch("e2e_L1", "l0", [1e6], tolerance=0.1, budget=3, start=1.0)  # 10x steps fall short
    tried = run(curve, lambda c: 150 * c**-0.7)
    (row,) = curve.summary()
    assert len(tried) == 3 and curve.is_done() and row["state"] == "budget spent" and not row["met"]
    assert "raise search.max_trials_per_curve" in row["reason"]


def test_a_ceiling_the_metric_reached_ends_the_search_for_targets_beyond_it():
    """L0 stops rising below coefficient 0.18 (capped at 500): once a decade of smaller coefficients
    leaves it there, the target is out of reach and the rest of the budget is kept."""
    curve = CurveSearch("e2e_L1", "l0", [1e6], tolerance=0.1, budget=8, start=1.0)
    tried = run(curve, lambda c: min(500.0, 150 * c**-0.7))
    (row,) = curve.summary()
    assert len(tried) == 3 and row["state"] == "out of reach" and "l0 stays within 500-500" in row["reason"]


def test_heavy_noise_and_a_tight_tolerance_do_not_loop():
    curve = CurveSearch("e2e_L1", "l0", [30, 60], tolerance=0.005, budget=40, start=1.0)
    tried = run(curve, l0_response(noise=0.3, seed=3))
    assert len(tried) <= 40 and no_duplicates(tried)


def searcher(start: float = 1.0) -> TargetSearcher:
    template = {"run": {"mode": "e2e", "loss": {"sparsity": {"coeff": None}}}}
    curves = {k: CurveSearch(k, "l0", [20, 40, 80], tolerance=0.15, budget=10, start=start) for k in ("a", "b")}
    return TargetSearcher(curves, {k: template for k in curves})


def drive(s: TargetSearcher, suggestions: list, n_steps: int, next_id: int, running: list[str]) -> int:
    """As Tune would: ask for trials until the searcher waits, then complete the oldest running one
    with the response at its coefficient; ``n_steps`` completions at most."""
    for _ in range(n_steps):
        while True:
            trial_id = f"trial{next_id}"
            config = s.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                break
            next_id += 1
            assert coeff_of(config) > 0 and list(config) == ["run"]  # the coefficient once, in the run config
            suggestions.append((trial_id, s.trial_curve[trial_id], coeff_of(config)))
            running.append(trial_id)
        if not running:
            break
        done = running.pop(0)
        coeff = {t: c for t, _, c in suggestions}[done]
        s.on_trial_complete(done, {"l0": 150 * coeff**-0.7, "final": True})
    return next_id


def test_searcher_save_and_restore_continue_the_same_search(tmp_path):
    straight: list = []
    a = searcher()
    drive(a, straight, 100, 0, [])
    assert all(g.is_done() for g in a.curves.values()) and a.suggest("extra") == Searcher.FINISHED
    assert all(g.is_met(t) for g in a.curves.values() for t in g.targets)

    split: list = []
    running: list[str] = []
    b = searcher()
    next_id = drive(b, split, 3, 0, running)  # the driver dies here, with trials still running
    b.save(str(tmp_path / "searcher.pkl"))
    c = searcher(start=99.0)  # a fresh searcher: the saved state replaces its own
    c.restore(str(tmp_path / "searcher.pkl"))
    drive(c, split, 100, next_id, running)
    assert split == straight
    assert {k: g.finished for k, g in c.curves.items()} == {k: g.finished for k, g in a.curves.items()}


def test_an_errored_trial_is_recorded_as_failed():
    s = searcher()
    config = s.suggest("t0")
    s.on_trial_complete("t0", None, error=True)
    assert [p.coeff for p in s.curves[s.trial_curve["t0"]].failed.values()] == [coeff_of(config)]


# ---- the edges of a real sweep (issue 26) ------------------------------------------------------------


def dead_from_3(c: float) -> float:
    """issue 26's repro: L0 = 400 c^-1.5, and a dead SAE (L0 0) from coefficient 3 on."""
    return 0.0 if c >= 3 else 400 * c**-1.5


def test_a_dead_region_is_narrowed_by_slope_steps_and_bisection_not_crawled_toward():
    """Logged as L0 1e-6, the dead trial made log-log interpolation land next to the live end: 10, 1,
    1.24, 1.46, 1.65, 1.83, 1.99, 2.13, the budget of 8 gone, target 100 missed."""
    curve = CurveSearch("local_L0", "l0", [100], tolerance=0.15, budget=8, start=10.0)
    tried = run(curve, dead_from_3)
    assert curve.is_met(100) and len(tried) <= 5
    assert tried[:2] == [10.0, pytest.approx(1.0)]  # the dead start: 10x away from it
    assert min(c for c, v in curve.finished if v == 0) < 10  # the dead edge was probed, not avoided


def test_a_target_beyond_where_the_sae_dies_is_out_of_reach_and_says_so():
    curve = CurveSearch("local_L0", "l0", [40], tolerance=0.15, budget=20, start=1.0)  # needs c = 4.6: dead
    tried = run(curve, dead_from_3)
    (row,) = curve.summary()
    assert row["state"] == "out of reach" and not row["met"] and len(tried) < 20
    assert "l0 jumps across the target between coefficients 2.9" in row["reason"] and "(degenerate)" in row["reason"]
    assert "overrides.train.n_samples" in row["reason"]


def blocks0(c: float) -> dict:
    """The built-in model's blocks.0 with an unnormalised local relu, 1000 samples (measured: L0 133 at
    coefficient 1, 126 at 2.94 and 124 at 14.7; CE-loss score 0.19, 0.097, 0.062; here 133 c^-0.026 and
    0.19 c^-0.64): L0 hardly falls
    while the SAE degenerates from about 2.9 on, barely better than zero ablation."""
    return {"l0": 133 * c**-0.026, "ce_loss_increase": 3.8 * c**0.06, "ce_loss_score": 0.19 * c**-0.64}


def test_a_target_past_where_the_sae_degenerates_is_out_of_reach_and_names_the_fix():
    """It bisected between a live and a degenerate trial until the budget was gone (6 trials, 3 of
    them degenerate), then said "l0 leaves the live range between coefficients 2.082 (127) and 2.944
    (dead) ... raise search.max_trials_per_curve"."""
    curve = CurveSearch("local_L0", "l0", [50, 100], tolerance=0.2, budget=6, start=1.0)
    tried = run(curve, blocks0)
    assert sum(blocks0(c)["ce_loss_score"] < 0.1 for c in tried) == 1 and len(tried) < curve.budget
    for row in curve.summary():
        assert row["state"] == "out of reach", row
        assert "the SAE degenerates before l0 reaches the target" in row["reason"]
        assert "at coefficient 2.94 l0 is 129 and the trial is degenerate (CE-loss score 0.0" in row["reason"]
        assert "barely better than zero ablation" in row["reason"] and "dead" not in row["reason"]
        assert "fix: train longer (overrides.train.n_samples" in row["reason"]
        assert "max_trials_per_curve" not in row["reason"]


def test_a_degenerate_trial_is_dead_to_the_search_whatever_its_metric_says():
    dead = {"l0": 30.0, "ce_loss_increase": 0.3, "ce_loss_score": 0.02}  # as bad as zero ablation
    assert search_value("l0", dead) == 0.0 and search_value("ce_loss_increase", dead) == math.inf
    assert search_value("l0", {"l0": 0.4, "ce_loss_score": 0.9}) == 0.0  # L0 < 1: no active element
    assert search_value("l0", {"l0": float("nan")}) is None and search_value("l0", {}) is None
    curve = CurveSearch("e2e_L0", "ce_loss_increase", [0.3], tolerance=0.2, budget=6, start=1.0)
    curve.finished = [(1.0, 0.2), (4.0, search_value("ce_loss_increase", dead))]
    assert not curve.is_met(0.3)  # the report keeps that trial off the frontier: no level there
    assert 1.0 < curve.proposals()[0].coeff < 4.0


def blocks0_local_l0(c: float) -> float:
    """issue 26's measurement (local SAEs at blocks.0.hook_resid_pre of the built-in model, 1000-sample
    trials): L0 124-133 for coefficients 1-44, 71 at both 443 and 4439; log-linear between 44 and 443."""
    if c <= 44:
        return 124 + 9 * math.log(c) / math.log(44)
    f = min(1.0, math.log(c / 44) / math.log(443 / 44))
    return 133 * (71 / 133) ** f


def test_a_floor_ends_the_search_for_targets_below_it_after_the_bracketed_target_is_met():
    """The flat stretch 1-44 is stepped through (L0 has not moved yet); the floor from 443 on is
    recognised once a decade of coefficients leaves L0 on it, and status says why and what to change."""
    curve = CurveSearch("local_L0", "l0", [100, 50], tolerance=0.15, budget=12, start=1.0)
    tried = run(curve, blocks0_local_l0)
    met, floor = curve.summary()
    assert met["met"] and floor["state"] == "out of reach" and len(tried) <= 8  # budget left unspent
    assert sum(blocks0_local_l0(c) == 71 for c in tried) <= 3  # at most one decade stepped into the floor
    assert "l0 stays within 71-71 for coefficients" in floor["reason"]
    assert "train longer (overrides.train.n_samples) or with a higher lr (overrides.train.lr)" in floor["reason"]


def test_targets_such_as_0_1_and_0_35_read_settled_once_their_bracket_is_too_narrow():
    """exp(log(t)) != t for these: the old flag never matched them."""
    curve = CurveSearch("g", "ce_loss_increase", [0.1, 0.35], tolerance=0.005, budget=10, start=1.0)
    curve.finished = [(1.0, 0.099), (1.015, 0.101), (2.0, 0.34), (2.03, 0.36)]
    assert [r["settled"] for r in curve.summary()] == [True, True]
    assert curve.proposals() == [] and curve.is_done()
    assert "crosses the target between coefficients 1 (0.099) and 1.015 (0.101)" in curve.summary()[0]["reason"]


def test_met_needs_live_trials_on_both_sides_of_the_target():
    curve = CurveSearch("g", "ce_loss_increase", [0.3], tolerance=0.2, budget=6, start=2.0)
    curve.finished = [(2.0, 0.3044), (3.9, 0.6)]  # within tolerance, but the report cannot read 0.3 there
    assert not curve.is_met(0.3)
    (proposal,) = curve.proposals()  # aims past the target by half the tolerance: 0.3 * exp(-0.1)
    assert 0.3044 * proposal.coeff / 2.0 == pytest.approx(0.3 * math.exp(-0.1), rel=0.02)
    curve.finished.append((proposal.coeff, 0.3044 * proposal.coeff / 2.0))
    assert curve.is_met(0.3)


def quickstart_like_trials(mode: str, coeffs: list[float], ce, l0) -> list[Trial]:
    return [
        trial_record(
            mode,
            c,
            trial_id=f"{mode}_s{c:.4g}",
            state="finished",
            metrics={"l0": l0(c), "ce_loss_increase": ce(c), "alive_dict_elements": 500, "ce_loss_score": 0.8},
        )
        for c in coeffs
    ]


def test_every_ce_target_the_search_meets_is_a_level_the_report_reads_on_that_frontier():
    """The quickstart's search counted e2e's 0.3044 and 0.5477 as meeting 0.3 and 0.6 (tolerance 0.2),
    and report.match_at at 0.3 / 0.6 printed "out of range" for e2e: they now agree."""
    responses = {  # mode: (CE-loss increase, L0, first coefficient); e2e's start lands on 0.3044
        "local": (lambda c: 0.09 * c**1.1, lambda c: 400 / c, 2.0),
        "e2e": (lambda c: 0.1522 * c, lambda c: 150 / c**0.8, 2.0),
        "e2e+ds": (lambda c: 0.06 * c**0.9, lambda c: 200 / c, 4.0),
    }
    trials, curves = [], {}
    for mode, (ce, l0, start) in responses.items():
        curves[mode] = CurveSearch(mode, "ce_loss_increase", [0.3, 0.6], tolerance=0.2, budget=4, start=start)
        trials += quickstart_like_trials(mode, run(curves[mode], ce), ce, l0)
    meta = {"sweep": "q", "model": None, "eval_tokens": [], "n_ctx": [], "match_at": [0.3, 0.6], "search_targets": {}}
    matched_at = compute_pareto(trials, meta)["hooks"]["blocks.1.hook_resid_pre"]["matched_at"]
    read = {(row["ce_loss_increase"], mode): v is not None for row in matched_at for mode, v in row["l0"].items()}
    met = {(t, mode): g.is_met(t) for mode, g in curves.items() for t in g.targets}
    assert met[(0.3, "e2e")] and met[(0.6, "e2e")]
    assert all(read[key] for key, ok in met.items() if ok)


# ---- errored trials, retries and resumes through Tune's wrappers (no Ray cluster) ------------------


def coeff_of(config: dict) -> float:
    return config["run"]["loss"]["sparsity"]["coeff"]


def l0_at(config: dict) -> dict:
    return {"l0": 150 * coeff_of(config) ** -0.7, "final": True}


def one_curve_plan(tmp_path, budget: int) -> Plan:
    spec = tiny_sweep(tmp_path)
    spec["axes"] = {"mode": ["local"], "layer": [1]}
    spec["run"]["sae"]["dict_size_to_input_ratio"] = 16.0  # 256 elements: room for the L0 targets
    spec["search"] = {
        "kind": "targets",
        "targets": {"l0": [20, 40, 80]},
        "max_trials_per_curve": budget,
        "start": {"local": 1.0},
    }
    return Plan.from_spec(sweep_from_dict(spec))


def test_a_curve_whose_start_errors_tries_its_start_again_within_its_budget(tmp_path):
    """It was abandoned for good: the start counted as tried, with nothing finished to step from."""
    plan = one_curve_plan(tmp_path, budget=3)
    curves = build_curves(plan)
    s = TargetSearcher(curves, plan.curves)
    first = s.suggest("t0")
    s.on_trial_complete("t0", None, error=True)
    retry = s.suggest("t1")
    assert coeff_of(retry) == coeff_of(first) == 1.0
    assert trial_label(retry) == trial_label(first) + "_retry1"  # a trial directory of its own
    s.on_trial_complete("t1", l0_at(retry))
    (curve,) = s.curves.values()
    assert curve.finished == [(1.0, pytest.approx(150.0))] and s.suggest("t2") not in (None, Searcher.FINISHED)
    s.on_trial_complete("t2", None, error=True)
    assert s.suggest("t3") == Searcher.FINISHED  # errored attempts count against the budget (3)
    plan = one_curve_plan(tmp_path, budget=3)
    curves = build_curves(plan)
    s = TargetSearcher(curves, plan.curves)
    for i in range(3):  # a start that always errors: three attempts, then the curve is done
        assert coeff_of(s.suggest(f"e{i}")) == 1.0
        s.on_trial_complete(f"e{i}", None, error=True)
    assert s.suggest("e3") == Searcher.FINISHED
    assert all(
        r["state"] == "budget spent" and "all 3 trials errored" in r["reason"]
        for r in curves[next(iter(curves))].summary()
    )


def test_an_errored_trial_that_resume_reruns_reaches_the_search_and_status_agrees(tmp_path):
    """Session 1 ends with one errored trial (and the searcher's FINISHED); `sweeps resume` re-runs it
    under its Tune id: its result reaches the searcher through Tune's ConcurrencyLimiter (which dropped
    ids it no longer counted as live), the restored SearchGenerator is not finished for having been
    (it then asks the searcher again), and status from the trials on disk records what the searcher did."""
    plan = one_curve_plan(tmp_path, budget=8)

    def fresh():
        return target_search_alg(TargetSearcher(build_curves(plan), plan.curves), max_concurrent=3)

    alg = fresh()
    limiter, searcher_ = alg.searcher, alg.searcher.searcher
    configs, errored, order = {}, "t2", []
    while True:  # as Tune: suggest up to the concurrency limit, then complete the oldest trial
        while (config := limiter.suggest(f"t{len(configs)}")) not in (None, Searcher.FINISHED):
            configs[f"t{len(configs)}"] = config
            order.append(f"t{len(configs) - 1}")
        if config == Searcher.FINISHED:
            break
        assert len(searcher_.running) <= 3  # the searcher holds the limit itself
        done = order.pop(0)
        limiter.on_trial_complete(done, None if done == errored else l0_at(configs[done]), error=done == errored)
    searcher_.save(str(tmp_path / "searcher.pkl"))
    limiter_state = limiter.get_state()
    alg.set_finished()  # Tune's flag after FINISHED, saved in its search_gen_state
    alg._counter, alg._total_samples = len(configs), total_budget(plan)
    generator_state = alg.get_state()

    resumed = fresh()
    resumed.searcher.set_state(limiter_state)
    resumed.searcher.searcher.restore(str(tmp_path / "searcher.pkl"))
    resumed.set_state(generator_state)
    assert len(configs) < total_budget(plan)  # budget left: Tune's counter does not end the search
    assert not resumed.is_finished() and errored in resumed.searcher.searcher.running
    resumed.searcher.on_trial_complete(errored, l0_at(configs[errored]))  # the re-run finished
    (curve,) = resumed.searcher.searcher.curves.values()
    assert (coeff_of(configs[errored]), pytest.approx(l0_at(configs[errored])["l0"])) in curve.finished
    assert not curve.failed and not curve.pending
    assert resumed.searcher.suggest("t99") == Searcher.FINISHED  # every target met

    on_disk = [Trial.from_config(c, trial_id=tid, state="finished") for tid, c in configs.items()]
    for t, config in zip(on_disk, configs.values(), strict=True):
        t.metrics = l0_at(config)
    (status,) = curves_from_trials(plan, on_disk).values()
    assert sorted(status.finished) == sorted(curve.finished)
    assert status.summary() == curve.summary()


def test_a_restored_search_generator_is_not_finished_for_having_been_but_tunes_stop_still_ends_it():
    alg = TargetSearchGenerator(TargetSearcher({}, {}))
    alg.set_state({"counter": 3, "total_samples": 10, "finished": True, "experiment": None})
    assert not alg.is_finished()
    alg.set_finished()  # Ctrl-C, fail_fast: Tune stops the search within a session
    assert alg.is_finished()


def test_a_budget_spent_partly_on_errored_trials_says_how_many_errored():
    """Errored trials spent the budget and the verdict blamed the budget alone."""
    curve = CurveSearch("e2e_L1", "l0", [20], tolerance=0.15, budget=3, start=1.0)
    run(curve, lambda c: 150 * c**-0.7, fail=lambda c: c != 1.0)
    (row,) = curve.summary()
    assert row["state"] == "budget spent" and "2 of them errored (see their error.txt)" in row["reason"], row


def test_a_step_out_next_to_a_running_trial_waits_for_its_answer():
    """Two trials at a time, as Tune ran the measured blocks.0 search (docs/sweeps.md): L0 100's step from
    coefficient 1.62 landed at 6.38, next to the running 6.06 (L0 50's step): both degenerate, where one
    told. It now waits for 6.06, whose answer puts both targets out of reach: 5 trials, not 6."""
    measured = {0.106: (258.5, 0.886), 0.303: (172.6, 0.626), 0.606: (142.6, 0.293), 1.62: (128.8, 0.133)}
    measured.update({6.06: (124.9, 0.075), 6.38: (124.8, 0.074)})
    curve = CurveSearch("local_L0", "l0", [50, 100], tolerance=0.2, budget=6, start=0.106)
    running: list[tuple[str, float]] = []
    while True:
        while len(running) < 2 and (proposals := curve.proposals()):
            curve.start_trial(str(curve.n_started), proposals[0])
            running.append((str(curve.n_started - 1), proposals[0].coeff))
        if not running:
            break
        trial_id, coeff = running.pop(0)
        l0, score = measured[min(measured, key=lambda c: abs(math.log(c / coeff)))]
        curve.record(trial_id, {"l0": l0, "ce_loss_score": score})
    assert curve.n_started == 5 and [r["state"] for r in curve.summary()] == ["out of reach"] * 2


def test_a_budget_spent_stepping_toward_a_floor_says_the_floor_may_be_near():
    """L0 still moving, slowly (80.9 -> 65 over coefficients 604-3969: 20%, more than a floor's 15%), when
    the budget runs out: the verdict says a floor may be near, not only to raise the budget."""
    curve = CurveSearch("e2e_L0", "l0", [50], tolerance=0.2, budget=4, start=9.43)
    curve.finished = [(9.43, 289.9), (229.8, 99.95), (604.2, 80.89), (3969.0, 65.0)]
    (row,) = curve.summary()
    assert row["state"] == "budget spent" and row["reason"].endswith("raise search.max_trials_per_curve")
    assert "l0 moves slowly at the end of the measured range (80.9 to 65 for coefficients 604.2-3969)" in row["reason"]
    assert "a floor the training sets may be near (fix: train longer (overrides.train.n_samples)" in row["reason"]


def test_a_floor_measured_at_blocks0_e2e_is_out_of_reach_with_the_fix_not_budget_spent():
    """Measured: e2e at the built-in model's blocks.0, 1000 samples, L0 targets 50 and 100 (docs/sweeps.md):
    L0 fell from 80.9 to 71.3 over coefficients 604-3969 (6.6x, 12%), and 50 ended "budget spent"."""
    curve = CurveSearch("e2e_L0", "l0", [50, 100], tolerance=0.2, budget=6, start=9.43)
    curve.finished = [(9.43, 289.9), (30.21, 189.6), (60.42, 153.9), (229.8, 99.95), (604.2, 80.89), (3969.0, 71.28)]
    floor, met = curve.summary()
    assert met["state"] == "met" and floor["state"] == "out of reach"
    assert floor["reason"].startswith(
        "l0 floors near 71.3 at this training length (coefficients 604.2-3969 moved it 80.9 -> 71.3, and the 0 "
        "trials left would not reach 50 at that rate); fix: train longer (overrides.train.n_samples)"
    )
    curve.budget = 7  # one trial left, 10x at that rate: L0 61.1, within tolerance of 50 (conservative): searched on
    assert curve.summary()[0]["state"] == "searching"


def test_ce_bracketed_on_the_last_trial_is_met_once_the_limit_below_stops_taking_trials():
    """Measured: e2e at blocks.0, 1000 samples, CE targets 0.3 and 0.6, 6 trials (docs/sweeps.md): 0.6 was
    bracketed only by the 6th trial (15.2: 0.435, 151.8: 1.19) because the 4th and 6th went down toward 0.3,
    into e2e's CE floor without sparsity pressure (0.41-0.45). After 0.62 (0.447) that floor puts 0.3 out
    of reach, so the 6th trial goes inside 0.6's bracket instead."""
    curve = CurveSearch("e2e_L0", "ce_loss_increase", [0.3, 0.6], tolerance=0.2, budget=6, start=9.43)
    curve.finished = [(9.43, 0.412), (6.213, 0.4101), (15.18, 0.4352), (0.6213, 0.4471)]
    assert curve.standing(0.3).state == "out of reach"
    assert curve.standing(0.3).reason.startswith(
        "ce_loss_increase levels off near 0.447 as the sparsity pressure goes (coefficients 6.213-0.6213 moved "
        "it 0.41 -> 0.447"
    )
    (step,) = curve.proposals()  # 151.8 (1.19) as measured; then the bracket, not 0.3
    assert step.target == 0.6 and step.coeff == pytest.approx(151.8)
    curve.finished.append((151.8, 1.192))
    (inside,) = curve.proposals()
    assert inside.target == 0.6 and 15.18 < inside.coeff < 151.8 and curve.n_started + 1 <= curve.budget


def test_a_curve_whose_every_trial_degenerates_says_to_start_lower():
    """The issue's first trial: coefficient 14.7 at blocks.0, L0 124, CE-loss score 0.062."""
    curve = CurveSearch("local_L0", "l0", [100], tolerance=0.2, budget=6, start=14.7)
    tried = run(curve, lambda c: {"l0": 124.3, "ce_loss_score": 0.062})
    (row,) = curve.summary()
    assert tried == [14.7] and row["state"] == "out of reach"
    assert row["reason"].endswith(
        "every trial was degenerate: a smaller search.start for this mode (or none: scaled to the layer)"
    )
