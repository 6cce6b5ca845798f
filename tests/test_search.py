"""The frontier search on synthetic responses, without Ray: it reaches the targets in few trials, never
proposes a coefficient twice, survives failed trials and noise, stops at its budget, and resumes exactly."""

from __future__ import annotations

import math
import random

from sweeps.search import DUPLICATE, FrontierSearcher, GroupSearch, Searcher


def l0_response(noise: float = 0.03, seed: int = 0):
    """L0 = 150 c^-0.7, times log-normal noise: monotone in expectation, wiggly per trial."""
    rng = random.Random(seed)
    return lambda c: 150 * c**-0.7 * math.exp(rng.gauss(0, noise))


def run(group: GroupSearch, response, fail=lambda c: False, max_rounds: int = 50) -> list[float]:
    """Drive a group as Tune would (all proposals start, then all finish); returns the coefficients tried."""
    tried, n = [], 0
    for _ in range(max_rounds):
        proposals = group.proposals()
        if not proposals:
            assert group.is_done()
            return tried
        for p in proposals:
            n += 1
            group.start_trial(f"t{n}", p)
            tried.append(p.coeff)
        for trial_id, p in list(group.pending.items()):
            group.record(trial_id, None if fail(p.coeff) else response(p.coeff))
    raise AssertionError("the search did not stop")


def no_duplicates(coeffs: list[float]) -> bool:
    logs = sorted(math.log(c) for c in coeffs)
    return all(b - a >= DUPLICATE for a, b in zip(logs, logs[1:], strict=False))


def test_reaches_every_l0_target_within_tolerance_in_few_trials():
    group = GroupSearch("e2e_L1", "l0", [20, 40, 80, 160], tolerance=0.15, budget=12, start=1.0)
    tried = run(group, l0_response())
    assert all(group.is_met(t) for t in group.targets)
    assert len(tried) <= 9 and no_duplicates(tried) and all(c > 0 for c in tried)


def test_ce_loss_increase_targets_rise_with_the_coefficient():
    group = GroupSearch("local_L2", "ce_loss_increase", [0.1, 0.2, 0.4], tolerance=0.1, budget=12, start=3.0)
    tried = run(group, lambda c: 0.05 * c**1.3)
    assert all(group.is_met(t) for t in group.targets) and len(tried) <= 9 and no_duplicates(tried)


def test_failed_trials_carry_no_information_and_are_not_retried():
    group = GroupSearch("e2e_L1", "l0", [20, 80], tolerance=0.15, budget=12, start=1.0)
    calls = []

    def fail(c):  # the second and third trials error (after Tune's own retries)
        calls.append(c)
        return len(calls) in (2, 3)

    tried = run(group, l0_response(), fail=fail)
    assert group.failed == calls[1:3] and all(group.is_met(t) for t in group.targets)
    assert no_duplicates(tried) and len(tried) <= 10


def test_budget_is_a_hard_limit_and_unreachable_targets_stay_unmet():
    group = GroupSearch("e2e_L1", "l0", [1e6], tolerance=0.1, budget=5, start=1.0)  # L0 above any reachable
    tried = run(group, lambda c: min(500.0, 150 * c**-0.7))
    assert len(tried) == 5 and group.is_done() and not group.summary()[0]["met"]


def test_heavy_noise_and_a_tight_tolerance_do_not_loop():
    group = GroupSearch("e2e_L1", "l0", [30, 60], tolerance=0.005, budget=40, start=1.0)
    tried = run(group, l0_response(noise=0.3, seed=3))
    assert len(tried) <= 40 and no_duplicates(tried)


def searcher(start: float = 1.0) -> FrontierSearcher:
    template = {"mode": "e2e", "sparsity_coeff": None, "run": {"loss": {"sparsity": {"coeff": None}}}}
    groups = {k: GroupSearch(k, "l0", [20, 40, 80], tolerance=0.15, budget=10, start=start) for k in ("a", "b")}
    return FrontierSearcher(groups, {k: template for k in groups})


def drive(s: FrontierSearcher, suggestions: list, n_steps: int, next_id: int, running: list[str]) -> int:
    """As Tune would: ask for trials until the searcher waits, then complete the oldest running one
    with the response at its coefficient; ``n_steps`` completions at most."""
    for _ in range(n_steps):
        while True:
            trial_id = f"trial{next_id}"
            config = s.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                break
            next_id += 1
            assert config["run"]["loss"]["sparsity"]["coeff"] == config["sparsity_coeff"] > 0
            suggestions.append((trial_id, s.trial_group[trial_id], config["sparsity_coeff"]))
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
    assert all(g.is_done() for g in a.groups.values()) and a.suggest("extra") == Searcher.FINISHED
    assert all(g.is_met(t) for g in a.groups.values() for t in g.targets)

    split: list = []
    running: list[str] = []
    b = searcher()
    next_id = drive(b, split, 3, 0, running)  # the driver dies here, with trials still running
    b.save(str(tmp_path / "searcher.pkl"))
    c = searcher(start=99.0)  # a fresh searcher: the saved state replaces its own
    c.restore(str(tmp_path / "searcher.pkl"))
    drive(c, split, 100, next_id, running)
    assert split == straight
    assert {k: g.finished for k, g in c.groups.items()} == {k: g.finished for k, g in a.groups.items()}


def test_an_errored_trial_is_recorded_as_failed():
    s = searcher()
    config = s.suggest("t0")
    s.on_trial_complete("t0", None, error=True)
    assert s.groups[s.trial_group["t0"]].failed == [config["sparsity_coeff"]]
