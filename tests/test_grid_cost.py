"""The hindsight grid a target search is measured against (sweeps.planning.grid_cost)."""

from __future__ import annotations

import math

import pytest

from sweeps.planning.grid_cost import grid_costs, smallest_grid

TARGETS = [20, 40, 80, 160]


def power_law(scale: float, coeffs=(0.25, 0.5, 1, 2, 4, 8, 16, 32)):
    return [(c, scale / c) for c in coeffs]  # L0 = scale / coeff: slope -1 in log-log


def test_one_curve_needs_one_coefficient_per_target_when_targets_are_further_apart_than_the_window():
    n, coeffs = smallest_grid([power_law(100)], TARGETS, tolerance=0.15)
    assert n == 4  # targets a factor 2 apart, window +-0.15 in log: no coefficient serves two
    achieved = sorted(100 / c for c in coeffs)
    for t, a in zip(TARGETS, achieved, strict=True):
        assert abs(math.log(a / t)) <= 0.15 + 1e-9


def test_one_grid_per_mode_must_serve_every_group_of_it():
    # A second layer whose curve sits a full target step (x2) away needs a fifth coefficient ...
    assert smallest_grid([power_law(100), power_law(200)], TARGETS, tolerance=0.15)[0] == 5
    # ... one closer than the window's width (x1.2, log 0.18 < 0.3) shares the four.
    assert smallest_grid([power_law(100), power_law(120)], TARGETS, tolerance=0.15)[0] == 4


def test_a_wide_tolerance_lets_one_coefficient_serve_two_targets():
    assert smallest_grid([power_law(100)], [40, 50], tolerance=0.15)[0] == 1
    assert smallest_grid([power_law(100)], TARGETS, tolerance=0.36)[0] == 2  # 0.36 > log(2)/2


def test_targets_outside_the_measured_range_are_never_met_by_extrapolation():
    curve = power_law(100, coeffs=(1, 2, 4))  # L0 25..100: 160 and 20 lie outside
    assert smallest_grid([curve], TARGETS, tolerance=0.15) == (None, ())
    assert smallest_grid([[(1.0, 50.0)]], [50], tolerance=0.15) == (None, ())  # one point is no curve


def test_grid_costs_counts_trials_per_mode():
    costs = grid_costs(
        {"local": {"L1": power_law(100), "L2": power_law(200)}, "e2e": {"L1": power_law(30)}}, TARGETS, 0.15
    )
    by_mode = {c.mode: c for c in costs}
    assert (by_mode["local"].n_coeffs, by_mode["local"].n_trials) == (5, 10)
    assert by_mode["e2e"].n_trials is None  # its L0 reaches 120 at most: target 160 is out of range
    assert by_mode["local"].coeffs[1] / by_mode["local"].coeffs[0] == pytest.approx(2, rel=0.1)


def test_a_group_whose_trials_are_all_dead_or_non_positive_sizes_no_grid_instead_of_crashing():
    (cost,) = grid_costs({"local": {"g": [(10.0, 0.0), (1.0, 0.0)]}}, [32.0], 0.15)
    assert (cost.n_coeffs, cost.n_trials, cost.coeffs) == (None, None, ())
    one_live = [(1.0, 50.0), (10.0, 0.0), (0.1, -0.01), (100.0, math.inf)]  # inf: the search's dead CE trial
    assert smallest_grid([one_live], [50], tolerance=0.15) == (None, ())


def test_dead_trials_beyond_a_live_curve_leave_its_grid_unchanged():
    live = power_law(100)
    assert smallest_grid([live + [(64.0, 0.0), (128.0, 0.0)]], TARGETS, tolerance=0.15) == smallest_grid(
        [live], TARGETS, tolerance=0.15
    )
