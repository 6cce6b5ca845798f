"""`python -m sweeps analyse`: trial choice, bad input, escaping, the report's section, and the pages
in a real headless browser (Chromium)."""

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from analysis_fixtures import SCRIPT, build_tiny_experiment

from e2e_sae.config import ConfigError
from sweeps.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return build_tiny_experiment(tmp_path_factory.mktemp("analyse"))


@pytest.fixture(scope="module")
def analysed(experiment):
    """The CLI run once on the tiny experiment, default output directory."""
    assert main(["analyse", str(experiment)]) == 0
    return experiment / "analysis"


def test_cli_writes_browser_geometry_and_numbers(analysed, experiment):
    doc = json.loads((analysed / "analysis.json").read_text())
    roles = {s["trial_id"]: s["role"] for s in doc["saes"]}
    # one frontier SAE per mode at the hook, both of seed 0 (e2e has only seed 0, and local's seed 1
    # is nearer the matched level: picking it would compare the modes across seeds), and local's
    # other seed as its baseline
    assert roles == {
        "local_L1_r2_s0.5_seed0": "frontier",
        "e2e_L1_r2_s0.5_seed0": "frontier",
        "local_L1_r2_s0.5_seed1": "seed baseline",
    }
    for s in doc["saes"]:
        result = json.loads((experiment / s["trial_id"] / "result.json").read_text())
        # the pass runs on the run's own eval tokens: its L0 is the run's final l0
        assert s["l0"] == pytest.approx(result["l0"], rel=1e-4)
        assert s["eval_tokens"] == result["eval_tokens"] == 8 * 32
        assert 0 < s["norm_ratio"] < 3 and s["dead"] + s["dense"] <= s["n_dict"] == 256
        assert (analysed / s["page"]).is_file() and (analysed / f"density_{s['trial_id']}.png").is_file()
    h = doc["hooks"]["blocks.1.hook_resid_pre"]
    assert set(h["within"]) == {"local", "e2e"} and set(h["norm_ratio"]) == {"local", "e2e"}
    assert h["local_minus"]["e2e"] == pytest.approx(h["within"]["local"]["mean"] - h["within"]["e2e"]["mean"])
    labels = [c["label"] for c in h["cross"]]
    labelled = {c["label"]: c for c in h["cross"]}
    assert labels[:2] == ["e2e -> local", "local -> e2e"] and doc["has_seed_baseline"]
    assert any(c["seed_baseline"] for c in h["cross"])
    seeds = {s["trial_id"]: s["seed"] for s in doc["saes"]}
    assert h["seeds"] == {"local": 0, "e2e": 0}
    for c in h["cross"]:
        assert c["same_seed"] != c["seed_baseline"]  # modes at one seed; the baseline across seeds
        assert -1 <= c["mean"] <= 1 and c["median"] <= 1
        assert c["same_seed"] == (seeds[c["from"]] == seeds[c["to"]])
        assert c["frac_above_0.9"] <= c["shared"] <= 1  # shared: best match above 0.7 (Paulo & Belrose)
    for w in h["within"].values():  # 48 training samples move the decoder only a little from its init
        assert 0.5 < w["to_init_mean"] < 1 and 0 < w["init_mean"] < 1
    md = (analysed / "analysis.md").read_text()
    assert "| blocks.1.hook_resid_pre | e2e -> local |" in md and "0.166" in md and "0.67 / 0.31 / 0.15" in md
    assert "add `seed: [0, 1]`" not in md  # this sweep has a second seed
    assert "| same seed (same initial decoder) |" in md and "| e2e -> local |" in md
    assert "| shared (> 0.7) |" in md
    assert re.search(r"same mode across seeds local seed (\d) -> local seed (?!\1)\d ", md)
    assert "across modes at one seed (sharing an initial decoder) e2e -> local" in md
    assert "across modes and seeds" not in md and labelled["e2e -> local"]["same_seed"]
    assert "blocks.1.hook_resid_pre: the modes are compared at seed 0" in md
    assert "| local_L1_r2_s0.5_seed1 | seed baseline | blocks.1.hook_resid_pre | local | 1 |" in md
    assert (analysed / "geometry.png").stat().st_size > 10_000


def test_token_text_is_escaped(analysed):
    for page in analysed.glob("*.html"):
        text = page.read_text()
        assert "<script" not in text.lower(), page  # no script element at all, least of all from tokens
    sae_page = next(p for p in analysed.glob("*_seed0.html") if p.name.startswith("e2e"))
    text = sae_page.read_text()
    assert "&lt;" in text and "&gt;" in text  # the tags in the eval text, as text


def test_tokens_show_as_bytes_and_visible_whitespace_on_every_page(analysed):
    """No token is U+FFFD (a partial UTF-8 character decoded alone) or blank: the contexts and the
    boosts / suppresses lists both go through e2e_sae.token_text.token_strings."""
    pages = [p for p in analysed.glob("*.html") if p.name != "index.html"]
    assert pages
    for page in pages:
        text = page.read_text()
        assert "\ufffd" not in text, page
        spans = re.findall(r'<span class="tok[^"]*"[^>]*>([^<]*)</span>', text)
        spans += re.findall(r'<span title="[^"]*">([^<]*)</span>', text)  # boosts and suppresses
        assert len(spans) > 100
        for token in map(html.unescape, spans):
            assert token and not any(c.isspace() for c in token), (page, token)
    assert re.search(r"&lt;0x[0-9A-F]{2}&gt;", "".join(p.read_text() for p in pages))  # a byte token, escaped


def test_an_existing_analysis_is_never_overwritten(analysed, experiment, capsys):
    before = (analysed / "analysis.json").read_text()
    assert main(["analyse", str(experiment)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--out" in err and "already exists" in err
    assert (analysed / "analysis.json").read_text() == before


def test_bad_input_one_line_each_before_any_compute(experiment, tmp_path, capsys):
    def run(*args) -> str:
        assert main(["analyse", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        return err

    empty = tmp_path / "empty"
    (empty / "t0").mkdir(parents=True)
    (empty / "t0" / "params.json").write_text(json.dumps({"mode": "local", "hook": "blocks.1.hook_resid_pre"}))
    assert "no finished trials" in run(str(empty), "--out", str(tmp_path / "o1"))
    err = run(str(experiment), "--trials", "nope_L9", "--out", str(tmp_path / "o2"))
    assert "no trial named nope_L9" in err and "e2e_L1_r2_s0.5_seed0" in err
    broken = tmp_path / "broken"
    shutil.copytree(experiment, broken, ignore=shutil.ignore_patterns("analysis", "checkpoint*", "checkpoints"))
    err = run(str(broken), "--trials", "e2e_L1_r2_s0.5_seed0", "--out", str(tmp_path / "o3"))
    assert "e2e_L1_r2_s0.5_seed0: no checkpoint" in err
    for o in ("o1", "o2", "o3"):
        assert not (tmp_path / o).exists()  # nothing written


def test_named_trials_and_the_report_section(experiment, tmp_path):
    out = tmp_path / "named"
    assert main(["analyse", str(experiment), "--out", str(out), "--trials", "e2e_L1_r2_s0.5_seed0"]) == 0
    doc = json.loads((out / "analysis.json").read_text())
    assert [(s["trial_id"], s["role"]) for s in doc["saes"]] == [("e2e_L1_r2_s0.5_seed0", "named")]
    assert not doc["has_seed_baseline"]
    assert "add `seed: [0, 1]` to the sweep's axes" in (out / "analysis.md").read_text()


def test_members_of_a_grouped_trial_are_analysed_from_their_part_of_the_group_checkpoint(experiment, tmp_path):
    """A grouped Tune trial keeps each member's checkpoint under its name (checkpoint_*/<name>/):
    analyse finds it in the newest checkpoint that has it, and nowhere else."""
    from sweeps.analysis.picks import select
    from sweeps.planning.trial import group_config

    names = ["local_L1_r2_s0.5_seed0", "local_L1_r2_s0.5_seed1"]
    exp = tmp_path / "grouped"
    group = exp / "local_L1_group0"
    group.mkdir(parents=True)
    shutil.copy(experiment / "sweep.yaml", exp / "sweep.yaml")
    params = [json.loads((experiment / n / "params.json").read_text()) for n in names]
    (group / "params.json").write_text(json.dumps(group_config("local_L1_group0", params, names)))
    finals = {n: json.loads((experiment / n / "result.json").read_text().splitlines()[-1]) for n in names}
    (group / "result.json").write_text(json.dumps({"n_samples": 48, "final": True, "members": finals}) + "\n")
    for n in names:
        shutil.copytree(experiment / n / "checkpoint_000000", group / "checkpoint_000000" / n)
    picks = select(exp, names)
    assert [p.checkpoint for p in picks] == [group / "checkpoint_000000" / n / "checkpoint.pt" for n in names]
    assert main(["analyse", str(exp), "--trials", *names]) == 0
    doc = json.loads((exp / "analysis" / "analysis.json").read_text())
    assert sorted(s["trial_id"] for s in doc["saes"]) == names
    shutil.rmtree(group / "checkpoint_000000" / names[1])
    with pytest.raises(ConfigError, match=rf"^trial {names[1]}: no checkpoint in {group} \(checkpoint_\*/\); "):
        select(exp, names)


def test_report_shows_the_analysis_or_how_to_make_it(analysed, experiment, tmp_path):
    from sweeps.reporting.report import write_report

    report = write_report(experiment, tmp_path / "report").read_text()
    section = report.split("## Inside the dictionaries", 1)[1]
    rel = os.path.relpath(analysed, tmp_path / "report")
    assert f"![decoder geometry]({rel}/geometry.png)" in section and "e2e -> local" in section
    bare = tmp_path / "bare"
    shutil.copytree(experiment, bare, ignore=shutil.ignore_patterns("analysis"))
    report = write_report(bare, tmp_path / "report2").read_text()
    assert f"No analysis yet: `python -m sweeps analyse {bare}`" in report


# ---- a real browser ----------------------------------------------------------------------------


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI runs this test")
    return exe


def browse(exe: str, page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / "profile"
    return subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )


def visible_text(dom: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", dom))


def pixel_std(png: Path) -> float:
    import numpy as np
    from matplotlib.image import imread

    return float(np.asarray(imread(png))[..., :3].std())


def test_pages_render_in_headless_chromium(analysed, tmp_path):
    exe = chromium()
    sae_page = next(analysed.glob("e2e_*.html"))
    for page in (analysed / "index.html", sae_page):
        proc = browse(exe, page, tmp_path, "--dump-dom")
        assert proc.returncode == 0, proc.stderr[-2000:]
        dom = proc.stdout
        assert "<title>" in dom and "pwned" not in dom.split("</title>")[0]  # no script ran
        assert "<script" not in dom.lower()
        if page == sae_page:
            assert dom.count('class="tok') > 100  # the contexts' tokens are in the DOM
            assert SCRIPT.split("'")[0] in visible_text(dom).replace("↵", "")  # '<script>document.title=' as text
            assert "Boosts (direct logit effect)" in dom
        else:
            assert "e2e -&gt; local" in dom and 'src="geometry.png"' in dom
        png = tmp_path / f"{page.stem}.png"
        proc = browse(exe, page, tmp_path, f"--screenshot={png}", "--window-size=1200,900", "--hide-scrollbars")
        assert proc.returncode == 0 and png.is_file(), proc.stderr[-2000:]
        assert pixel_std(png) > 0.05, f"{png} looks blank"


def test_the_index_fits_1280_px_in_headless_chromium(analysed, tmp_path):
    """document.scrollWidth <= clientWidth at a 1280 px window, with a script measuring it in a copy
    (the pages themselves carry none)."""
    exe = chromium()
    copy = tmp_path / "pages"
    shutil.copytree(analysed, copy)
    root = "document.documentElement"
    measure = f"<script>document.body.dataset.width = {root}.scrollWidth + ' ' + {root}.clientWidth</script></body>"
    for name in ("index.html", next(p.name for p in copy.glob("e2e_*.html"))):
        page = copy / f"measured_{name}"
        page.write_text((copy / name).read_text().replace("</body>", measure))
        proc = browse(exe, page, tmp_path, "--dump-dom", "--window-size=1280,900")
        assert proc.returncode == 0, proc.stderr[-2000:]
        scroll, client = map(int, re.search(r'data-width="(\d+) (\d+)"', proc.stdout).groups())
        assert 1200 < client <= 1280 and scroll <= client, (name, scroll, client)


@pytest.mark.slow
def test_analyse_cli_in_a_subprocess(experiment, tmp_path):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps", "analyse", str(experiment), "--out", str(tmp_path / "a")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "feature browser:" in proc.stdout and (tmp_path / "a" / "index.html").is_file()


def test_the_shared_share_counts_latents_whose_best_match_is_above_0_7():
    """Paulo & Belrose's criterion on decoders with known answers: latents x, y, z, w of one SAE against
    another SAE with directions x and (y + z/2)/|.|: best matches 1.0, 0.894, 0.447, 0 -> half shared."""
    import torch

    from e2e_sae.dictionary import max_cos_sim_across
    from sweeps.analysis.geometry import _summary

    mine = torch.eye(4)
    other = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.5], [0.0, 0.0]])
    summary = _summary(max_cos_sim_across(mine, other))
    assert summary["shared"] == 0.5 and summary["frac_above_0.9"] == 0.25 and summary["n"] == 4
    assert summary["mean"] == pytest.approx((1 + 1 / 1.25**0.5 + 0.5 / 1.25**0.5) / 4, abs=1e-6)
    assert _summary(max_cos_sim_across(other, mine))["shared"] == 1.0  # not symmetric: x and y+z/2 both match


def _finished(mode: str, seed: int, ce: float, l0: float = 20.0):
    from sweep_fixtures import trial_record

    tid = f"{mode}_seed{seed}_ce{ce}"
    return trial_record(mode, 1.0, seed=seed, trial_id=tid, state="finished",
                        metrics={"l0": l0, "ce_loss_increase": ce})  # fmt: skip


def test_every_mode_is_picked_at_one_seed():
    """Modes compared at one seed: the seed at which the most modes have a frontier, even where another
    seed's SAE of a mode is nearer the matched level; a mode lacking that seed falls back to its own."""
    from sweeps.analysis.picks import _at_one_seed

    modes = ["local", "e2e", "e2e+ds"]
    trials = [
        _finished("local", 0, 0.30),
        _finished("local", 1, 0.20),  # nearest the level, but seed 1 has no e2e+ds
        _finished("e2e", 0, 0.21),
        _finished("e2e", 1, 0.50),
        _finished("e2e+ds", 0, 0.25),
        _finished("e2e+ds", 0, 0.19, l0=30.0),  # on seed 0's frontier too, and nearer
    ]
    picks = _at_one_seed(trials, modes, 0.2)
    assert [(t.trial_id, role) for t, role in picks] == [
        ("local_seed0_ce0.3", "frontier"),
        ("e2e_seed0_ce0.21", "frontier"),
        ("e2e+ds_seed0_ce0.19", "frontier"),
    ]
    only_one = [t for t in trials if not (t.series == "e2e+ds")] + [_finished("e2e+ds", 2, 0.2)]
    assert [t.trial_id for t, _ in _at_one_seed(only_one, modes, 0.2)] == [
        "local_seed0_ce0.3",  # seeds 0 and 1 both cover two modes: the smaller wins
        "e2e_seed0_ce0.21",
        "e2e+ds_seed2_ce0.2",  # its only seed
    ]


def test_geometry_legends_sit_outside_the_histograms():
    """Three modes with seed baselines give the cross-SAE panel ten entries: no legend overlaps an axes."""
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from sweeps.analysis.geometry import geometry_figure

    g = torch.Generator().manual_seed(0)

    def sims():
        return torch.rand(64, generator=g)

    cross = {}
    for m in ("e2e", "e2e+ds"):
        cross |= {f"{m} -> local": sims(), f"local -> {m}": sims()}
    for m in ("local", "e2e", "e2e+ds"):
        cross |= {f"{m} seed 0 -> {m} seed 1": sims(), f"{m} seed 1 -> {m} seed 0": sims()}
    raw = {
        hook: {"within": {m: sims() for m in ("local", "e2e")}, "cross": cross, "init": {0: sims(), 1: sims()}}
        for hook in ("blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre")
    }
    fig = geometry_figure(raw)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = [(ax, ax.get_legend()) for ax in fig.axes]
    assert len(legends) == 4 and all(leg is not None for _, leg in legends)
    assert max(len(leg.get_texts()) for _, leg in legends) == 10
    for leg_ax, leg in legends:
        box = leg.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= fig.bbox.x1 and 0 <= box.y0 and box.y1 <= fig.bbox.y1  # not cut off
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (leg_ax.get_title(), ax.get_title())
