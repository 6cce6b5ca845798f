import math

import numpy as np
import pytest

from sweeps.frontier import (
    FrontPoint,
    degenerate_reason,
    interpolate_at,
    matched_target,
    overlap_levels,
    pareto_front,
    ratio_bound,
)


def xy(front):
    return [(p.x, p.y) for p in front]


def test_front_keeps_only_non_dominated_points_sorted_by_x():
    pts = [(10, 0.5, "a"), (20, 0.3, "b"), (15, 0.6, "dominated"), (40, 0.1, "c"), (50, 0.1, "worse_x")]
    front = pareto_front(pts)
    assert xy(front) == [(10, 0.5), (20, 0.3), (40, 0.1)]
    assert [p.payload for p in front] == ["a", "b", "c"]


def test_single_point_is_its_own_front():
    assert xy(pareto_front([(3.0, 1.0, "only")])) == [(3.0, 1.0)]
    assert pareto_front([]) == []


def test_identical_points_keep_one_independent_of_input_order():
    pts = [(5, 0.2, "trial_b"), (5, 0.2, "trial_a"), (5, 0.4, "trial_c")]
    for order in (pts, pts[::-1]):
        front = pareto_front(order)
        assert [p.payload for p in front] == ["trial_a"]


def test_same_x_keeps_lower_y_and_same_y_keeps_lower_x():
    front = pareto_front([(5, 0.3), (5, 0.2), (7, 0.1), (9, 0.1)])
    assert xy(front) == [(5, 0.2), (7, 0.1)]


def test_nan_and_inf_points_are_dropped_with_a_warning_naming_the_trial():
    pts = [(1.0, float("nan"), {"trial_id": "t_nan"}), (float("inf"), 0.1, "t_inf"), (2.0, 0.5, "ok")]
    with pytest.warns(UserWarning) as record:
        front = pareto_front(pts)
    messages = " ".join(str(w.message) for w in record)
    assert "t_nan" in messages and "t_inf" in messages
    assert [p.payload for p in front] == ["ok"]


def test_array_input():
    front = pareto_front(np.array([[1.0, 3.0], [2.0, 1.0], [3.0, 2.0]]))
    assert xy(front) == [(1.0, 3.0), (2.0, 1.0)]


FRONT = [FrontPoint(10, 0.4, "sparse"), FrontPoint(100, 0.2, "mid"), FrontPoint(1000, 0.1, "dense")]


def test_interpolation_is_linear_in_log_x_between_neighbours():
    r = interpolate_at(FRONT, 0.3)  # halfway between 10 and 100 in log space
    assert r.x == pytest.approx(math.sqrt(10 * 100))
    assert (r.lower_x.payload, r.higher_x.payload, r.clipped) == ("sparse", "mid", False)


def test_interpolation_in_plain_x():
    r = interpolate_at(FRONT, 0.15, log_x=False)
    assert r.x == pytest.approx(550)
    assert (r.lower_x.payload, r.higher_x.payload) == ("mid", "dense")


def test_target_on_a_frontier_point_returns_that_point():
    r = interpolate_at(FRONT, 0.2)
    assert r.x == 100 and r.lower_x is r.higher_x and r.lower_x.payload == "mid"
    assert interpolate_at(FRONT, 0.1).x == 1000


def test_target_above_the_frontier_clips_to_the_sparsest_point():
    r = interpolate_at(FRONT, 0.9)
    assert r.x == 10 and r.clipped and r.lower_x.payload == "sparse"


def test_target_below_the_frontier_is_an_error():
    with pytest.raises(ValueError, match="never reaches"):
        interpolate_at(FRONT, 0.05)


def test_matched_target_is_the_lowest_level_all_frontiers_reach():
    a = pareto_front([(10, 0.3), (50, 0.1)])
    b = pareto_front([(5, 0.4), (20, 0.15)])
    assert matched_target([a, b, []]) == 0.15
    assert matched_target([]) is None
    # every frontier reaches it
    for f in (a, b):
        interpolate_at(f, 0.15)


def test_matched_comparison_known_answer():
    local = pareto_front([(40, 0.30, "l1"), (100, 0.10, "l0")])
    e2e = pareto_front([(10, 0.25, "e1"), (30, 0.12, "e0")])
    y = matched_target([local, e2e])
    assert y == 0.12
    x_local = interpolate_at(local, y).x
    assert x_local == pytest.approx(40 * 2.5**0.9)
    assert interpolate_at(e2e, y).x / x_local == pytest.approx(30 / (40 * 2.5**0.9))


def test_overlap_levels_stay_inside_every_frontier_where_the_arithmetic_rounds_past_the_top():
    lo, hi = 0.05380878321728433, 0.4616855296962341  # lo + (hi - lo) * 6 / 6 is one ulp above hi
    assert lo + (hi - lo) * 6 / 6 > hi
    narrow = pareto_front([(10, hi), (50, lo)])
    wide = pareto_front([(20, 0.9), (200, 0.01)])
    for fronts in ([narrow, wide], [wide, narrow]):
        levels = overlap_levels(fronts, 7)
        assert len(levels) == 7 and (levels[0], levels[-1]) == (lo, hi)
        assert levels == sorted(levels) and all(lo <= y <= hi for y in levels)
        for front in fronts:  # every level can be read off both frontiers, no clipping
            assert all(not interpolate_at(front, y).clipped for y in levels)
    assert overlap_levels([narrow, pareto_front([(1, 0.04), (2, 0.01)])], 7) == []  # no common range
    assert overlap_levels([narrow, []], 7) == []


def test_a_ratio_of_readings_is_a_bound_when_either_was_clipped():
    assert ratio_bound(False, False) is None  # two interpolations: an estimate
    assert ratio_bound(True, False) == "upper"  # numerator at most its value: the ratio at most
    assert ratio_bound(False, True) == "lower"  # denominator at most its value: the ratio at least
    assert ratio_bound(True, True) == "neither"


def test_degenerate_reason_names_the_rule_that_failed():
    assert "CE-loss score 0.05 < 0.1" in degenerate_reason({"ce_loss_score": 0.05, "l0": 30})
    assert "L0 0.5 < 1" in degenerate_reason({"ce_loss_score": 0.9, "l0": 0.5})
    assert degenerate_reason({"ce_loss_score": 0.9, "l0": 30}) is None
    assert degenerate_reason({"l0": None, "ce_loss_score": float("nan")}) is None  # unknown: not degenerate
