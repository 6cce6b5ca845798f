"""Tune's live table tells its rows apart: the axes docs/sweeps.md says it shows."""

from ray.tune.experiment import Trial as TuneTrial
from ray.tune.progress_reporter import _get_trial_info

from sweeps.planning.plan import Plan
from sweeps.planning.spec import load_sweep
from sweeps.running.tuner import _status_table


def _rows(path: str, *sets: str) -> tuple[list[str], list[list[str]]]:
    """The live table's headers and its rows for the plan's first three Tune trials, as Tune renders them."""
    spec = load_sweep(path, list(sets))
    plan = Plan.from_spec(spec, against_model=False)
    reporter = _status_table(spec)
    params, width = list(reporter._parameter_columns), reporter._max_column_length
    trials = [TuneTrial("run_trial", config=c, stub=True) for c in plan.tune_trials[:3]]
    headers = [reporter._parameter_columns[p] for p in params]
    return headers, [_get_trial_info(t, params, list(reporter._metric_columns), width)[3:] for t in trials]


def test_live_table_shows_mode_hook_and_coefficient_of_each_trial():
    headers, rows = _rows("sweeps/configs/quickstart_grid.yaml")
    assert headers == ["mode", "hook", "coeff"]
    assert [r[:3] for r in rows] == [
        ["local", "blocks.1.hook_resid_pre", 1.0],
        ["local", "blocks.1.hook_resid_pre", 2.0],
        ["local", "blocks.1.hook_resid_pre", 4.0],
    ]


def test_live_table_shows_architecture_and_k_in_a_topk_sweep():
    headers, rows = _rows("sweeps/configs/quickstart_grid.yaml", "axes.architecture=[relu, topk]", "axes.k=[16, 32]")
    assert headers == ["mode", "hook", "architecture", "coeff", "k"]
    assert {(r[2], r[3], r[4]) for r in rows} <= {
        ("relu", 1.0, None),
        ("relu", 2.0, None),
        ("relu", 4.0, None),
        ("topk", None, 16),
        ("topk", None, 32),
    }


def test_live_table_shows_a_grid_groups_members():
    headers, rows = _rows("sweeps/configs/quickstart_grid.yaml", "group_size=3")
    assert headers == ["mode", "hook", "members"]
    assert "local_L1_r8_s1_seed0" in str(rows[0][2]) and "local_L1_r8_s4_seed0" in str(rows[0][2])
