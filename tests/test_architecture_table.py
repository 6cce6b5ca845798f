"""Architectures compared with each other at matched CE-loss increase (sweeps.reporting.architecture_table):
constructed frontiers with known answers. The README's "BatchTopK needs 3-4x fewer active elements than
relu" came from no report; this is where a sweep of several architectures now says it."""

from __future__ import annotations

import pytest
from sweep_fixtures import trial_record

from sweeps.reporting.architecture_table import architecture_lines
from sweeps.reporting.plots import architecture_figure
from sweeps.reporting.report import compute_pareto, render_markdown

HOOK = "blocks.1.hook_resid_pre"
META = {"sweep": "t", "model": None, "eval_tokens": [], "n_ctx": [], "match_at": [0.2, 0.5], "search_targets": {}}


def _trial(mode, arch, l0, ce):
    t = trial_record(mode, 1.0, trial_id=f"{arch}_{mode}_{l0}", state="finished")
    t.run["sae"]["architecture"] = arch
    if arch == "batchtopk":
        t.run["sae"]["k"], t.run["loss"]["sparsity"] = int(l0), None
    t.metrics = {"l0": l0, "ce_loss_increase": ce, "alive_dict_elements": 500, "ce_loss_score": 0.8}
    return t


# relu local: L0 100 at CE 0.1, 40 at 0.3; batchtopk local: a quarter of it, over CE 0.15-0.4 (the same
# log-L0 slope, so 0.25 wherever both reach). e2e: batchtopk needs half of relu's L0.
TRIALS = [
    _trial("local", "relu", 100, 0.1),
    _trial("local", "relu", 40, 0.3),
    _trial("local", "batchtopk", 25 * (40 / 100) ** 0.25, 0.15),
    _trial("local", "batchtopk", 10 * (40 / 100) ** 0.5, 0.4),
    _trial("e2e", "relu", 80, 0.1),
    _trial("e2e", "relu", 20, 0.5),
    _trial("e2e", "batchtopk", 40, 0.1),
    _trial("e2e", "batchtopk", 10, 0.5),
]


def test_each_mode_compares_the_architectures_at_the_requested_levels_and_across_the_overlap():
    comparison = compute_pareto(TRIALS, META)["hooks"][HOOK]["architecture_comparison"]
    assert comparison["reference"] == "relu" and list(comparison["modes"]) == ["local", "e2e"]
    local, e2e = comparison["modes"]["local"], comparison["modes"]["e2e"]
    at_02, at_05 = local["levels"]
    assert at_02["ce_loss_increase"] == 0.2
    assert at_02["l0"]["relu"] == pytest.approx(100 * 0.4**0.5)  # halfway in log L0 between 100 and 40
    assert at_02["ratios"]["batchtopk/relu"] == pytest.approx(0.25)
    assert at_05["l0"] == {"relu": None, "batchtopk": None} and at_05["ratios"] == {"batchtopk/relu": None}
    curve = local["l0_ratio_curve"]["batchtopk/relu"]
    assert len(curve) == 7 and (curve[0]["ce_loss_increase"], curve[-1]["ce_loss_increase"]) == (0.15, 0.3)
    assert [p["ratio"] for p in curve] == pytest.approx([0.25] * 7)
    assert [p["ratio"] for p in e2e["l0_ratio_curve"]["batchtopk/relu"]] == pytest.approx([0.5] * 7)
    assert e2e["levels"][1]["ratios"]["batchtopk/relu"] == pytest.approx(0.5)  # 10 / 20 at 0.5


def test_the_comparison_is_a_table_a_sentence_per_mode_and_a_plot(tmp_path):
    doc = compute_pareto(TRIALS, META)
    lines = architecture_lines(doc["hooks"][HOOK]["architecture_comparison"])
    assert lines[0] == "### Architectures compared at matched CE-loss increase (L0 ratio to relu)"
    assert "| local | 0.2 | 63.25 | 15.81 | 0.25 |" in lines
    assert "| local | across the overlap 0.15-0.3 |  |  | 0.25 |" in lines
    assert "| local | 0.5 | out of range | out of range | – |" in lines
    assert (
        "local: batchtopk needs 0.25 times relu's L0 across the CE-loss increases where both frontiers reach "
        "(0.15-0.3).  " in lines
    )
    assert "### Architectures compared at matched CE-loss increase (L0 ratio to relu)" in render_markdown(
        doc, {HOOK: tmp_path / "f.png"}
    )
    fig = architecture_figure(doc)
    lines_drawn = {line.get_label(): [round(y, 6) for y in line.get_ydata()] for line in fig.axes[0].lines}
    assert lines_drawn[f"local: batchtopk/relu at {HOOK}"] == [0.25] * 7


def test_one_architecture_has_no_comparison():
    doc = compute_pareto([t for t in TRIALS if t.architecture == "relu"], META)
    assert "architecture_comparison" not in doc["hooks"][HOOK] and architecture_figure(doc) is None
