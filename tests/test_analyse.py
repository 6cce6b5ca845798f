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
    # one frontier SAE per mode at the hook, and the other local seed as its baseline
    assert sorted(roles.values()) == ["frontier", "frontier", "seed baseline"]
    assert roles["e2e_L1_r2_s0.5_seed0"] == "frontier"
    assert {"local_L1_r2_s0.5_seed0", "local_L1_r2_s0.5_seed1"} <= set(roles)
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
    for c in h["cross"]:
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
    assert ("across modes and seeds e2e -> local" in md) == (seeds[labelled["e2e -> local"]["to"]] != 0)
    assert (analysed / "geometry.png").stat().st_size > 10_000


def test_token_text_is_escaped(analysed):
    for page in analysed.glob("*.html"):
        text = page.read_text()
        assert "<script" not in text.lower(), page  # no script element at all, least of all from tokens
    sae_page = next(p for p in analysed.glob("*_seed0.html") if p.name.startswith("e2e"))
    text = sae_page.read_text()
    assert "&lt;" in text and "&gt;" in text  # the tags in the eval text, as text


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
