"""Seeds in the report: each seed's own frontiers, the spread of every matched reading and ratio over
seeds, a plain verdict on whether a mode difference exceeds the seed spread, and the alive panel left
out when it carries nothing (constructed frontiers with known answers)."""

from __future__ import annotations

import json

import pytest
from sweep_fixtures import trial_record
from test_report import metric_row

from sweeps.reporting.report import compute_pareto, write_report

HOOK = "blocks.1.hook_resid_pre"
META = {"sweep": "s", "model": None, "eval_tokens": [], "n_ctx": [], "match_at": [0.1, 0.3], "search_targets": {}}


def _trial(mode, seed, coeff, l0, ce, alive=500):
    t = trial_record(mode, coeff, seed=seed, trial_id=f"{mode}_s{coeff}_seed{seed}", state="finished")
    t.metrics = {"l0": l0, "ce_loss_increase": ce, "alive_dict_elements": alive, "n_dict_elements": 512}
    t.metrics["ce_loss_score"] = 0.8
    return t


def trials(e2e_seed1_at_01: float = 60.0, alive: int = 500):
    return [
        _trial("local", 0, 1.0, 100, 0.1, alive),
        _trial("local", 0, 4.0, 40, 0.3, alive),
        _trial("local", 1, 1.0, 120, 0.1, alive),
        _trial("local", 1, 4.0, 50, 0.3, alive),
        _trial("e2e", 0, 1.0, 50, 0.1, alive),
        _trial("e2e", 0, 4.0, 20, 0.3, alive),
        _trial("e2e", 1, 1.0, e2e_seed1_at_01, 0.1, alive),
        _trial("e2e", 1, 4.0, 24, 0.3, alive),
    ]


def test_each_seed_is_read_on_its_own_frontier_with_mean_and_range():
    spread = compute_pareto(trials(), META)["hooks"][HOOK]["seed_spread"]
    assert spread["seeds"] == [0, 1] and spread["spread"] == "mean and min-max over seeds"
    at_01, at_03 = spread["levels"]
    assert at_01["ce_loss_increase"] == pytest.approx(0.1) and at_03["ce_loss_increase"] == pytest.approx(0.3)
    assert at_01["l0"]["local"] == {0: pytest.approx(100), 1: pytest.approx(120)}
    assert at_01["l0_spread"]["local"] == {
        "n": 2,
        "mean": pytest.approx(110),
        "min": pytest.approx(100),
        "max": pytest.approx(120),
    }
    ratio = at_03["ratios"]["e2e/local"]
    assert ratio["per_seed"] == {0: pytest.approx(0.5), 1: pytest.approx(0.48)}  # each seed against local's same seed
    assert ratio["mean"] == pytest.approx(0.49) and (ratio["min"], ratio["max"]) == (
        pytest.approx(0.48),
        pytest.approx(0.5),
    )
    assert at_01["verdict"]["e2e/local"] == at_03["verdict"]["e2e/local"] == "exceeds"


def test_overlapping_seed_ranges_are_within_the_spread_and_one_seed_has_no_spread():
    at_01 = compute_pareto(trials(e2e_seed1_at_01=105.0), META)["hooks"][HOOK]["seed_spread"]["levels"][0]
    assert at_01["l0_spread"]["e2e"]["max"] == pytest.approx(105)
    assert at_01["verdict"]["e2e/local"] == "within"  # e2e 50-105 overlaps local 100-120
    one_seed = [t for t in trials() if t.seed == 0]
    assert "seed_spread" not in compute_pareto(one_seed, META)["hooks"][HOOK]


def test_the_l0_ratio_curve_carries_each_seeds_ratio_at_its_levels():
    """Seed 0's e2e frontier is half of local's everywhere; seed 1's is 0.5 at CE 0.1 and 0.48 at 0.3,
    interpolated in log L0 between (0.5 * 0.96 ** f at fraction f of the way)."""
    hook = compute_pareto(trials(), META)["hooks"][HOOK]
    pooled = hook["l0_ratio_curve"]["e2e/local"]
    by_seed = hook["seed_spread"]["l0_ratio_curve"]["e2e/local"]
    assert [p["ce_loss_increase"] for p in by_seed] == [p["ce_loss_increase"] for p in pooled]
    assert len(by_seed) == 7
    for point in by_seed:
        f = (point["ce_loss_increase"] - 0.1) / 0.2
        assert point["per_seed"] == {0: pytest.approx(0.5), 1: pytest.approx(0.5 * 0.96**f)}
        assert (point["n"], point["min"], point["max"]) == (2, pytest.approx(0.5 * 0.96**f), pytest.approx(0.5))


def test_the_l0_ratio_table_gives_the_per_seed_range(tmp_path):
    _write(tmp_path / "exp", trials())
    md = write_report(tmp_path / "exp").read_text()
    assert "| modes | L0 ratio at CE-loss increase (level: ratio (min-max of the per-seed ratios)) |" in md
    assert "0.1: 0.5 (0.5-0.5)" in md and "0.3: 0.5 (0.48-0.5)" in md
    one = tmp_path / "one"
    _write(one, [t for t in trials() if t.seed == 0])
    assert "0.3: 0.5 |" in write_report(one).read_text()  # one seed: no range


def _write(exp, ts):
    for t in ts:
        d = exp / t.trial_id
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps(t.tune_config()))
        row = {
            **metric_row(t.metrics["l0"], t.metrics["alive_dict_elements"], t.metrics["ce_loss_increase"], 64, True, 0)
        }
        row["n_dict_elements"] = 512
        (d / "result.json").write_text(json.dumps(row) + "\n")


def test_the_report_says_in_a_sentence_whether_modes_differ_beyond_the_seeds(tmp_path):
    _write(tmp_path / "exp", trials())
    md = write_report(tmp_path / "exp").read_text()
    assert "### Across seeds 0, 1 (each seed's own frontiers; mean and min-max)" in md
    assert "| 0.1 | local | 100 | 120 | 110 (100-120) | – |" in md
    assert (
        "At CE-loss increase 0.1, e2e's L0 (55 (50-60)) against local's (110 (100-120)): the mode difference "
        "exceeds the seed spread (the ranges over seeds do not overlap)." in md
    )


def test_an_alive_panel_of_one_column_is_left_out_and_said_so(tmp_path):
    from matplotlib.image import imread

    _write(tmp_path / "all", trials(alive=512))
    _write(tmp_path / "some", trials(alive=500))
    md_all = write_report(tmp_path / "all").read_text()
    md_some = write_report(tmp_path / "some").read_text()
    assert "keeps all its dictionary elements alive, so the alive-elements panel (one column) is left out" in md_all
    assert "alive-elements panel" not in md_some
    png = f"frontier_{HOOK}.png"
    one, two = imread(tmp_path / "all" / "report" / png), imread(tmp_path / "some" / "report" / png)
    assert one.shape[1] < 0.6 * two.shape[1]  # one panel instead of two
    assert json.loads((tmp_path / "all" / "report" / "pareto.json").read_text())["hooks"][HOOK]["all_alive"] is True
