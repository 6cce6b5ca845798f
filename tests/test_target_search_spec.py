"""The sweep file's target-search block: one-line errors before any compute, curves and their
templates, status from the trials on disk, and the report's use of the search settings (Ray-free)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sweep_fixtures import tiny_sweep, trial_record, write_sweep

from e2e_sae.config import ConfigError
from sweeps.planning.plan import Plan
from sweeps.planning.spec import sweep_from_dict
from sweeps.planning.target_search import build_curves, curves_from_trials, status_lines, total_budget
from sweeps.reporting.report import compute_pareto


def search_sweep(tmp_path, **search):
    spec = tiny_sweep(tmp_path)
    spec["axes"].pop("sparsity_coeff")
    spec["axes"]["seed"] = [0, 1]
    spec["run"]["sae"]["dict_size_to_input_ratio"] = 16.0  # 256 elements: room for the L0 targets
    spec["search"] = {
        "kind": "targets",
        "targets": {"l0": [10, 20, 40]},
        "tolerance": 0.15,
        "max_trials_per_curve": 6,
        "start": {"local": 2.0, "e2e": 0.5},
        **search,
    }
    return spec


@pytest.mark.parametrize(
    "search, message",
    [
        ({"targets": {"l0": []}}, "search.targets.l0: empty"),
        ({"targets": {"l0": [10, -5]}}, "search.targets.l0: targets must be finite and > 0"),
        ({"targets": {"l0": [10, 10]}}, "search.targets.l0: repeated target"),
        ({"targets": {}}, "search.targets: a target search needs targets"),
        ({"targets": {"kl": [0.1]}}, "search.targets: unknown metric 'kl'; use one of l0, ce_loss_increase"),
        ({"targets": {"l0": [10], "ce_loss_increase": [0.2]}}, "search.targets: one metric per search"),
        ({"tolerance": 0}, "search.tolerance: must be > 0"),
        ({"max_trials_per_curve": 2}, "search.max_trials_per_curve: 2 is fewer than the 3 targets"),
        ({"start": {"e2e+ds": 1.0}}, "search.start: mode(s) ['e2e+ds'] are not in axes.mode"),
        ({"start": {"e2e": 0}}, "search.start: coefficients must be > 0"),
    ],
)
def test_bad_target_search_fails_in_one_line(tmp_path, search, message):
    with pytest.raises(ConfigError) as err:
        sweep_from_dict(search_sweep(tmp_path, **search))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_coefficient_grid_and_a_target_search_for_one_mode_is_refused(tmp_path):
    spec = search_sweep(tmp_path)
    spec["axes"]["sparsity_coeff"] = {"local": [1.0]}
    with pytest.raises(
        ConfigError,
        match=r"axes.sparsity_coeff: both a coefficient grid and search.kind: "
        r"targets for mode\(s\) \['local'\]",
    ):
        sweep_from_dict(spec)
    grid = tiny_sweep(tmp_path)
    grid["axes"].pop("sparsity_coeff")
    with pytest.raises(ConfigError, match="axes.sparsity_coeff: missing"):
        sweep_from_dict(grid)  # a grid (the default) still needs its coefficients


def test_cli_plan_and_run_refuse_a_bad_search_before_ray(tmp_path):
    path = write_sweep(tmp_path, search_sweep(tmp_path, tolerance=-1))
    for command in ("plan", "run"):
        proc = subprocess.run([sys.executable, "-m", "sweeps", command, str(path)], capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.startswith("error: search.tolerance: must be > 0")
    assert not (tmp_path / "results").exists()


def test_curves_are_the_other_axes_and_plan_prints_budget_and_first_proposals(tmp_path):
    plan = Plan.from_spec(sweep_from_dict(search_sweep(tmp_path)))
    assert list(plan.curves) == ["local_L1_r16_seed0", "local_L1_r16_seed1", "e2e_L1_r16_seed0", "e2e_L1_r16_seed1"]
    assert all(
        t["run"]["loss"]["sparsity"]["coeff"] == plan.spec.search.start[t["run"]["mode"]] for t in plan.curves.values()
    )
    curves = build_curves(plan)
    assert [c.start for c in curves.values()] == [2.0, 2.0, 0.5, 0.5]
    assert all(c.targets == [10, 20, 40] and c.budget == 6 for c in curves.values())
    assert total_budget(plan) == 24
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps", "plan", str(write_sweep(tmp_path, search_sweep(tmp_path)))],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "targets [10.0, 20.0, 40.0], tolerance 0.15, at most 6 trials per curve, 4 curves: at most 24 trials"
        in proc.stdout
    )
    assert "e2e_L1_r16_seed1             first coefficient 0.5" in proc.stdout
    assert "2 seeds: 2 curves and at most 12 trials per seed" in proc.stdout  # the budget grows with seeds


def _record(tid, mode, coeff, l0, ce, state="finished", seed=0, score=0.8):
    metrics = {"l0": l0, "ce_loss_increase": ce, "alive_dict_elements": 30, "ce_loss_score": score}
    return trial_record(mode, coeff, seed=seed, ratio=16.0, trial_id=tid, state=state, metrics=metrics)


def test_status_reads_met_targets_and_closest_trials_from_disk_records(tmp_path):
    plan = Plan.from_spec(sweep_from_dict(search_sweep(tmp_path)))
    trials = [
        _record("a", "local", 1.0, 41.0, 0.1),
        _record("b", "local", 4.0, 11.5, 0.5),
        _record("c", "local", 9.0, None, None, state="errored"),
        _record("d", "e2e", 1.0, 19.0, 0.3, seed=1),
    ]
    curves = curves_from_trials(plan, trials)
    local = curves["local_L1_r16_seed0"]
    assert local.finished == [(1.0, 41.0), (4.0, 11.5)] and {k: p.coeff for k, p in local.failed.items()} == {"c": 9.0}
    # 11.5 is within 0.15 of 10 but no trial lies below 10 (the report could not read it); 41 and 11.5 bracket 40
    assert [r["met"] for r in local.summary()] == [False, False, True]
    lines = status_lines(plan, trials)
    assert any(line.split()[:5] == ["local_L1_r16_seed0", "20", "no", "4", "11.5"] for line in lines)
    assert any(line.split()[:6] == ["local_L1_r16_seed0", "40", "yes", "1", "41", "3"] for line in lines)
    assert any(line.split()[:5] == ["e2e_L1_r16_seed1", "20", "no", "1", "19"] for line in lines)
    # Against the smallest grid meeting every target on these curves: local's 3 targets (a factor 2
    # apart, window +-0.15) need 3 coefficients in each of its 2 curves (seeds); e2e's one finished
    # trial sizes no grid.
    more = [_record("e", "local", 1.0, 41.0, 0.1, seed=1), _record("f", "local", 4.0, 11.5, 0.5, seed=1)]
    grid = {line.split()[0]: line for line in status_lines(plan, trials + more) if line.startswith("  ")}
    assert "search 5 trials; grid 3 coefficients x 2 curves = 6 trials" in grid["local"]
    assert "search 1 trials; grid no grid" in grid["e2e"]


def test_report_matches_at_named_levels_and_never_on_degenerate_trials():
    trials = [
        _record("l1", "local", 1, 100, 0.1),
        _record("l2", "local", 4, 20, 0.8),
        _record("e1", "e2e", 1, 50, 0.1),
        _record("e2", "e2e", 4, 10, 0.8),
        # no better than zero ablation: would pull the automatic level up to 4.5
        _record("dead", "e2e", 64, 0.5, 4.5, score=0.02),
    ]
    meta = {
        "sweep": "t",
        "model": None,
        "eval_tokens": [],
        "n_ctx": [],
        "match_at": [0.45, 2.0],
        "search_targets": {"l0": [20.0]},
    }
    doc = compute_pareto(trials, meta)
    h = doc["hooks"]["blocks.1.hook_resid_pre"]
    assert h["matched"]["ce_loss_increase"] == pytest.approx(0.1)
    at = h["matched_at"]
    assert at[0]["ce_loss_increase"] == 0.45 and at[0]["ratios"]["e2e/local"] == pytest.approx(0.5)
    assert at[1]["l0"] == {"local": None, "e2e": None}  # outside both frontiers: not extrapolated
    assert [p["ratio"] for p in h["l0_ratio_curve"]["e2e/local"]] == pytest.approx([0.5] * 7)
    assert [t["trial_id"] for t in doc["degenerate_trials"]] == ["dead"]
    assert "CE-loss score 0.02 < 0.1" in doc["degenerate_trials"][0]["reason"]
    assert doc["modes_without_frontier"] == []  # e2e still has good trials there
    only_dead = compute_pareto([trials[0], trials[1], trials[4]], meta)
    assert only_dead["modes_without_frontier"][0]["mode"] == "e2e"
    assert only_dead["hooks"]["blocks.1.hook_resid_pre"]["matched"]["modes"].keys() == {"local"}


def test_status_of_a_curve_whose_trials_are_all_dead_says_so_instead_of_crashing(tmp_path):
    spec = Plan.from_spec(sweep_from_dict(search_sweep(tmp_path)))
    dead = [_record("a", "local", 10.0, 0.0, 4.0, score=0.01), _record("b", "local", 1.0, 0.0, 4.5, score=0.01)]
    lines = status_lines(spec, dead)
    rows = [line for line in lines if line.startswith("local_L1_r16_seed0 ")]
    assert [r.split()[2] for r in rows] == ["no", "no", "no"]
    assert all("searching: to be proposed" in r for r in rows)  # 10x below the dead trials next
    assert any(line.startswith("  local") and "no grid meets every target" in line for line in lines)


def test_status_says_why_a_target_is_out_of_reach_and_what_to_change(tmp_path):
    spec = Plan.from_spec(sweep_from_dict(search_sweep(tmp_path)))
    floor = [_record(f"f{c}", "local", c, l0, 0.3) for c, l0 in ((44.0, 133.0), (443.0, 71.0), (4439.0, 71.0))]
    rows = [line for line in status_lines(spec, floor) if line.startswith("local_L1_r16_seed0 ")]
    assert len(rows) == 3 and all(
        "out of reach: l0 stays within 71-71 for coefficients 443-4.44e+03" in r for r in rows
    )
    assert all(
        "fix: train longer (overrides.train.n_samples) or with a higher lr (overrides.train.lr)" in r for r in rows
    )


def test_a_sweep_file_of_the_frontier_search_loads_as_the_target_search(tmp_path):
    """Sweep files (and experiments' saved sweep.yaml) from before the rename keep working."""
    old = search_sweep(tmp_path)
    old["search"]["kind"] = "frontier"
    old["search"]["max_trials_per_group"] = old["search"].pop("max_trials_per_curve")
    assert sweep_from_dict(old).search == sweep_from_dict(search_sweep(tmp_path)).search
    assert sweep_from_dict(old).search.kind == "targets"


def test_plan_refuses_an_l0_target_no_dictionary_reaches_and_names_those_one_curve_cannot(tmp_path, capsys):
    """`plan` accepted an L0 target of 5000 with 1024 dictionary elements."""
    from sweeps import cli

    spec = search_sweep(tmp_path, targets={"l0": [10, 300]})  # 16 x 16 = 256 elements: 300 is beyond
    assert cli.main(["plan", str(write_sweep(tmp_path, spec))]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "error: search.targets.l0: 300 not below the dictionary size 256 (L0 counts active dictionary elements); "
        "lower the target or raise axes.dict_size_to_input_ratio"
    )
    assert not (tmp_path / "results").exists()
    spec["axes"]["dict_size_to_input_ratio"] = [4, 32]  # 64 and 512 elements: only the first falls short
    assert cli.main(["plan", str(write_sweep(tmp_path, spec))]) == 0
    out = capsys.readouterr().out
    assert "local_L1_r4_seed0            first coefficient 2\n    target 300: out of reach: l0 counts" in out
    assert "local_L1_r32_seed0           first coefficient 2\n  local_L1_r32_seed1" in out


@pytest.mark.parametrize(
    "architecture, search, message",
    [
        (
            "relu",
            {"start_k": {"local": 16}},
            "search.start_k: only the topk family (topk, batchtopk, matryoshka_batchtopk) takes k, and this sweep "
            "trains ['relu']; drop search.start_k (search.start sets the first coefficient)",
        ),
        (
            "batchtopk",
            {"start": {"local": 2.0}},
            "search.start: ['batchtopk'] set L0 by k and take no coefficient; drop search.start (search.start_k "
            "sets the first k)",
        ),
    ],
)
def test_a_first_guess_the_sweep_would_ignore_is_refused(tmp_path, architecture, search, message):
    """search.start_k in a relu-only sweep was silently ignored."""
    spec = search_sweep(tmp_path)
    spec["search"].pop("start")
    spec["search"].update(search)
    spec["axes"]["architecture"] = [architecture]
    with pytest.raises(ConfigError) as err:
        sweep_from_dict(spec)
    assert str(err.value) == message


def test_a_grid_refuses_a_first_guess_it_would_ignore(tmp_path):
    spec = tiny_sweep(tmp_path, search={"start_k": {"local": 16}})
    with pytest.raises(ConfigError) as err:
        sweep_from_dict(spec)
    assert (
        str(err.value) == "search.start_k: only a target search starts from it; set search.kind: targets or remove it"
    )


def test_without_a_start_each_curve_starts_at_a_coefficient_scaled_to_its_layers_measured_activations(
    tmp_path, monkeypatch
):
    """The start was 1.0 at every layer: ~20x too strong for a local SAE at the built-in model's blocks.0
    (mean norm 1.19 against 23-25 at blocks.1-2), where every trial degenerated."""
    import math

    from sweeps.planning import curve_start

    monkeypatch.setenv("E2E_SAE_CACHE", str(tmp_path / "cache"))
    spec = search_sweep(tmp_path)
    spec["search"]["start"] = {"e2e": 0.5}  # given: kept; local: scaled
    spec["axes"].update(layer=[0, 2], seed=[0])
    plan = Plan.from_spec(sweep_from_dict(spec))
    norms = curve_start.activation_norms(plan.run_configs[0], ["blocks.0.hook_resid_pre", "blocks.2.hook_resid_pre"])
    assert norms["blocks.0.hook_resid_pre"] != pytest.approx(norms["blocks.2.hook_resid_pre"], rel=0.1)
    starts = {c.key: c.start for c in build_curves(plan).values()}
    for layer in (0, 2):
        expected = norms[f"blocks.{layer}.hook_resid_pre"] / math.sqrt(16)  # local: the norm against sqrt(d_in)
        assert starts[f"local_L{layer}_r16_seed0"] == pytest.approx(expected, rel=0.01)
        assert starts[f"e2e_L{layer}_r16_seed0"] == 0.5
    assert "blocks.0.hook_resid_pre's mean activation norm against sqrt(d_in)" in plan.starts[0].why
    assert (tmp_path / "cache" / "activation_norms.json").is_file()

    def measured_again(*args):
        raise AssertionError("measured again: the cache was not used")

    monkeypatch.setattr(curve_start, "_measure", measured_again)
    assert [s.start for s in Plan.from_spec(sweep_from_dict(spec)).starts] == [s.start for s in plan.starts]
    spec["search"]["start"] = {}  # e2e: the inverse (its KL does not grow with the activations, the L1 does)
    e2e = {c.key: c.start for c in build_curves(Plan.from_spec(sweep_from_dict(spec))).values()}
    assert e2e["e2e_L0_r16_seed0"] == pytest.approx(math.sqrt(16) / norms["blocks.0.hook_resid_pre"], rel=0.01)
    spec["run"]["sae"]["input_normalization"] = "mean_squared_norm"  # the SAE sees one scale: no scaling
    assert {s.start for s in Plan.from_spec(sweep_from_dict(spec)).starts} == {1.0}


def test_a_start_that_cannot_be_measured_here_is_unscaled_and_plan_says_why(tmp_path, monkeypatch):
    """Offline without the model (a hub name, no cache), plan still plans: the curves start at 1.0 and the
    plan names what could not be measured and the fix, in one line."""
    from sweeps.planning import curve_start

    monkeypatch.setenv("E2E_SAE_CACHE", str(tmp_path / "cache"))

    def offline(*args):
        raise OSError("We couldn't connect to the hub to load this model\nand a second line")

    monkeypatch.setattr(curve_start, "_measure", offline)
    spec = search_sweep(tmp_path)
    spec["search"]["start"] = {}
    spec["axes"].update(layer=[0], seed=[0])
    plan = Plan.from_spec(sweep_from_dict(spec))
    local = [s for s, cfg in zip(plan.starts, plan.run_configs, strict=True) if cfg.mode == "local"]
    assert local and {s.start for s in local} == {1.0}
    assert all(
        s.why == "1, unscaled: the activation norm could not be measured here (We couldn't connect to the hub to "
        "load this model); set search.start, or plan where the model loads"
        for s in local
    )
    assert not (tmp_path / "cache" / "activation_norms.json").exists()
