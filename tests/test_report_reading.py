"""The report read at a glance (issues #32, #33): plain-number 1-2-5 ticks on the log L0 axis, one colour per
mode in every figure, legend entries for everything drawn, architecture names on the crosses, integer ticks
for counts; report.md leading each hook with the levels the sweep asked for and saying when a reading rests
on one seed. Figures are built without writing them (sweeps.reporting.plots.*_figure) and their axes read."""

from __future__ import annotations

import math

import pytest
from matplotlib.colors import to_hex
from sweep_fixtures import trial_record

from sweeps.reporting.plots import frontier_figure, nice_values, ratio_figure
from sweeps.reporting.report import compute_pareto, render_markdown

HOOK = "blocks.1.hook_resid_pre"
META = {"sweep": "t", "model": None, "eval_tokens": [], "n_ctx": [], "match_at": [], "search_targets": {}}


def _trial(mode, seed, coeff, l0, ce, alive=1023, arch="relu", hook=HOOK):
    t = trial_record(mode, coeff, hook=hook, seed=seed, trial_id=f"{arch}_{mode}_{coeff}_s{seed}", state="finished")
    t.run["sae"]["architecture"] = arch
    t.metrics = {"l0": l0, "ce_loss_increase": ce, "alive_dict_elements": alive, "n_dict_elements": 1024}
    t.metrics["ce_loss_score"] = 0.8
    return t


def quickstart_like(seeds=(0, 1)):
    """Three modes, two seeds, L0 62-130 (less than a decade: matplotlib labelled it 6x10^1 and 10^2),
    alive elements 1023-1024 (it drew fractional ticks)."""
    out = []
    for mode, scale in (("local", 1.0), ("e2e", 0.8), ("e2e+ds", 0.75)):
        for seed in seeds:
            for i, c in enumerate((0.5, 1.0, 2.0, 4.0)):
                l0 = (130 - 15 * i) * scale * (1 + 0.03 * seed)
                out.append(_trial(mode, seed, c, l0, 0.12 * (i + 1) * (1 + 0.02 * seed), alive=1023 + (i < 2)))
    return out


def _draw(fig):
    fig.draw_without_rendering()
    return fig


def _tick_labels(ax):
    return [t.get_text() for t in ax.get_xticklabels() if t.get_text()]


def _is_plain_125(label: str) -> bool:
    v = float(label.replace(",", ""))
    mantissa = v / 10 ** math.floor(math.log10(v))
    return label.replace(",", "").replace(".", "").isdigit() and round(mantissa, 6) in (1, 2, 5)


@pytest.mark.parametrize(
    "l0s",
    [[62, 70, 85, 100, 130], [320, 340, 360, 3400], [4, 30, 2000, 9000], [61, 62]],
    ids=["under-a-decade", "architecture-sweep", "wide", "narrow"],
)
def test_the_log_l0_axis_is_labelled_with_plain_numbers_at_1_2_5_steps(l0s):
    trials = [_trial("local", 0, i, x, 0.5 / (i + 1)) for i, x in enumerate(l0s)]
    ax = _draw(frontier_figure({**compute_pareto(trials, META)}, trials, HOOK)).axes[0]
    labels = _tick_labels(ax)
    assert len(labels) >= 2 and all(_is_plain_125(label) for label in labels), labels
    values = [float(label.replace(",", "")) for label in labels]
    assert values == sorted(values) and len(set(labels)) == len(labels)  # none overlapping, none twice
    lo, hi = ax.get_xlim()
    assert lo <= min(l0s) and max(l0s) <= hi


def test_nice_values_are_every_1_2_5_step_in_range():
    assert nice_values(45, 210) == [50, 100, 200]
    assert nice_values(0.15, 0.6) == pytest.approx([0.2, 0.5])


def test_the_alive_panel_counts_in_integers():
    trials = quickstart_like()
    fig = _draw(frontier_figure(compute_pareto(trials, META), trials, HOOK))
    lo, hi = fig.axes[1].get_xlim()
    assert [t for t in fig.axes[1].get_xticks() if lo <= t <= hi] == [1023, 1024]  # was 1023.0, 1023.2, ...


def test_each_mode_has_one_colour_in_the_frontier_and_ratio_figures():
    trials = quickstart_like()
    doc = compute_pareto(trials, META)
    frontier = {line.get_label(): to_hex(line.get_color()) for line in frontier_figure(doc, trials, HOOK).axes[0].lines}
    ratio = {line.get_label(): to_hex(line.get_color()) for line in ratio_figure(doc).axes[0].lines}
    assert ratio[f"e2e/local at {HOOK}"] == frontier["e2e"] and ratio[f"e2e+ds/local at {HOOK}"] == frontier["e2e+ds"]
    assert len({frontier["local"], frontier["e2e"], frontier["e2e+ds"]}) == 3


def test_the_legends_name_the_seed_lines_band_matched_level_and_targets():
    trials = quickstart_like()
    meta = {**META, "match_at": [0.4], "search_targets": {"ce_loss_increase": [0.3, 0.45]}}
    doc = compute_pareto(trials, meta)
    frontier = [t.get_text() for t in frontier_figure(doc, trials, HOOK).legends[0].get_texts()]
    matched = doc["hooks"][HOOK]["matched"]["ce_loss_increase"]
    assert f"matched level {matched:.3g}" in frontier
    assert "search targets 0.3, 0.45" in frontier and "report.match_at 0.4" in frontier  # told apart
    assert "thin line: one seed's own frontier" in frontier
    ratio = [t.get_text() for t in ratio_figure(doc).legends[0].get_texts()]
    assert "band: min-max of the ratio read off each seed's own frontiers" in ratio
    assert "pooled frontiers" in ratio_figure(doc).axes[0].get_title()  # why the line may leave its band
    one_seed = quickstart_like(seeds=(0,))
    labels = [t.get_text() for t in frontier_figure(compute_pareto(one_seed, META), one_seed, HOOK).legends[0].texts]
    assert "thin line: one seed's own frontier" not in labels


def test_the_crosses_of_each_architecture_carry_its_name():
    trials = [
        _trial(mode, 0, c, l0 * scale * mode_scale, ce, arch=arch)
        for arch, scale in (("relu", 1.0), ("batchtopk", 0.3))
        for mode, mode_scale in (("local", 1.0), ("e2e", 0.8))
        for c, l0, ce in ((1, 300, 0.3), (2, 3400, 0.1))
    ]
    fig = _draw(frontier_figure(compute_pareto(trials, META), trials, HOOK))
    for ax in fig.axes:
        assert sorted(t.get_text() for t in ax.texts) == ["batchtopk", "relu"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(text.startswith("read at relu's matched level") for text in legend)
    assert any(text.startswith("read at batchtopk's matched level") for text in legend)


def _sections(md: str) -> dict[str, list[str]]:
    """report.md's level-3 headings under each hook, in order."""
    out: dict[str, list[str]] = {}
    hook = None
    for line in md.splitlines():
        if line.startswith("## "):
            hook = line[3:]
        elif line.startswith("### ") and hook:
            out.setdefault(hook, []).append(line[4:])
    return out


def test_report_md_leads_each_hook_with_the_levels_the_sweep_asked_for(tmp_path):
    other = "blocks.2.hook_resid_pre"
    trials = quickstart_like() + [_trial(m, s, c, 90 / c, 0.2 * c, hook=other) for m in ("local", "e2e") for s in (0, 1)
                                  for c in (1, 2)]  # fmt: skip
    meta = {**META, "search_targets": {"ce_loss_increase": [0.3]}}  # a target is a requested level too
    doc = compute_pareto(trials, meta)
    assert [row["ce_loss_increase"] for row in doc["hooks"][HOOK]["matched_at"]] == [0.3]
    md = render_markdown(doc, {h: tmp_path / f"{h}.png" for h in doc["hooks"]})
    for hook, headings in _sections(md).items():
        assert headings[0] == "Matched comparison at the levels the sweep asked for (report.match_at, search targets)"
        assert headings[1].startswith("Matched comparison at CE-loss increase"), hook
        assert "(automatic: the lowest level every mode's frontier reaches)" in headings[1]


def test_report_md_says_when_a_reading_rests_on_one_seed(tmp_path):
    trials = quickstart_like()
    dense = [("local", 200), ("e2e", 90), ("e2e+ds", 80)]
    trials += [_trial(mode, 1, 0.1, l0, 0.05) for mode, l0 in dense]  # only seed 1 reaches 0.05
    doc = compute_pareto(trials, {**META, "match_at": [0.3]})
    md = render_markdown(doc, {HOOK: tmp_path / "f.png"})
    assert "e2e/local: L0 ratio 0.45 (rests on one seed: only seed 1's frontiers reach this level)" in md
    assert "over seeds) |" in md  # the requested level, read at both seeds, gives their range
    # ... and says why the pooled ratio beside that range may lie outside it (it looked like a bug)
    assert "which the pooled ratio can lie outside (the pooled frontier is their lower envelope)" in md
    single = quickstart_like(seeds=(0,))
    md = render_markdown(compute_pareto(single, META), {HOOK: tmp_path / "f.png"})
    assert "One seed (0): every reading here rests on it" in md


def test_an_all_alive_hook_gives_no_alive_ratio_to_contradict(tmp_path):
    """It said "every alive ratio is 1" and then "alive ratio >= 1 (a lower bound)" (a clipped reading)."""
    points = [("local", 1, 100, 0.1), ("local", 2, 40, 0.3), ("e2e", 1, 30, 0.12)]  # e2e's reading is clipped
    trials = [_trial(m, 0, c, l0, ce, alive=1024) for m, c, l0, ce in points]
    md = render_markdown(compute_pareto(trials, META), {HOOK: tmp_path / "f.png"})
    assert "no alive ratio is given" in md and "alive-elements ratio" not in md and "every alive ratio is 1" not in md


@pytest.mark.parametrize("alive", [None, 1024], ids=["two-panels", "one-panel-all-alive"])
def test_the_frontier_legend_lies_inside_the_figure(alive):
    """With every element alive the figure has one panel; its four-column legend ran past both edges
    (the quickstart's report: "ocal", "thin line: one seed's ow")."""
    trials = quickstart_like()
    for t in trials:
        t.metrics["alive_dict_elements"] = alive or t.metrics["alive_dict_elements"]
    fig = _draw(frontier_figure(compute_pareto(trials, {**META, "search_targets": {"ce_loss_increase": [0.3]}}),
                                trials, HOOK))  # fmt: skip
    box, page = fig.legends[0].get_window_extent(), fig.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0, (box, page)
