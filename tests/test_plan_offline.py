"""`sweeps plan` never contacts the network: an HF model's shape comes from the HF cache, and without
it the plan says in one line what it could not check and goes on."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPT2_CONFIG = {"model_type": "gpt2", "n_layer": 12, "n_positions": 1024, "n_embd": 768, "n_head": 12}


def _plan(hf_home: Path, *sets: str) -> subprocess.CompletedProcess:
    # No offline flags (conftest sets them): plan must stay off the network by itself. A hub that refuses
    # every connection stands for none: asking it would print retry lines and take seconds each.
    offline_flags = ("HF_", "TRANSFORMERS_OFFLINE")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith(offline_flags)}
    env.update(HF_HOME=str(hf_home), HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(ROOT))
    args = [f"--set={s}" for s in ("storage_path=" + str(hf_home / "results"), *sets)]
    return subprocess.run(
        [sys.executable, "-m", "sweeps", "plan", "sweeps/configs/gpt2_layer6.yaml", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _cache_gpt2_config(hf_home: Path) -> None:
    repo = hf_home / "hub" / "models--gpt2"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(GPT2_CONFIG))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


def test_plan_without_the_hub_or_a_cached_config_says_so_in_one_line(tmp_path):
    proc = _plan(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "Retrying" not in out and "huggingface.co" not in out and "127.0.0.1" not in out, out[:2000]
    notes = [line for line in proc.stdout.splitlines() if "not in the HF cache" in line]
    assert notes == [notes[0]] and notes[0].startswith("model gpt2:"), proc.stdout[:2000]
    assert "gpt2-small-e2e: 45 trials" in proc.stdout


def test_plan_checks_layers_against_a_cached_config_offline(tmp_path):
    _cache_gpt2_config(tmp_path)
    proc = _plan(tmp_path, "axes.layer=[6, 20]")
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: axes.layer: layer 20 is out of range; the model has layers 0..11"
    ), proc.stderr[-2000:]
    ok = _plan(tmp_path)
    assert ok.returncode == 0 and "not in the HF cache" not in ok.stdout, ok.stdout[:2000] + ok.stderr[-2000:]
