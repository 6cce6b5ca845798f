"""A tiny finished sweep on the built-in model, made without Ray: each trial is trained by the
library in a scratch directory, as the trainable does, and laid out as Tune persists a trial
(params.json, result.json with the final row, checkpoint_000000/ holding the last checkpoint and its
final metrics). The eval text holds
``<script>`` tags, so the feature browser's contexts contain them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from sweep_fixtures import trial_record

from e2e_sae.config import run_config_from_dict
from e2e_sae.train import train

SCRIPT = "<script>document.title='pwned'</script>"
EVAL_LINES = [
    f"def handler(request):\n    return render('{SCRIPT}', request)\n",
    f"# {SCRIPT} & \"quotes\" <b>bold</b>\nclass Page:\n    body = '<div>{SCRIPT}</div>'\n",
]
# (mode, seed, sparsity coefficient)
TRIALS = [("local", 0, 0.5), ("e2e", 0, 0.5), ("local", 1, 0.5)]


def tiny_run(eval_file: Path, mode: str, seed: int, coeff: float) -> dict:
    return {
        "mode": mode,
        "output_dir": "set-below",
        "seed": seed,
        "model": {"name": "builtin:pycode"},
        "data": {
            "train": {"name": "builtin:pycode", "split": "train"},
            "eval": {"name": str(eval_file)},
            "n_ctx": 32,
            "n_eval_samples": 8,
            "eval_batch_size": 4,
        },
        "sae": {"position": "blocks.1.hook_resid_pre", "dict_size_to_input_ratio": 2.0},
        "loss": {"sparsity": {"coeff": coeff}},
        "train": {
            "n_samples": 48,
            "batch_size": 8,
            "lr": 3e-3,
            "warmup_samples": 8,
            "checkpoint_every_n_samples": 48,
            "act_frequency_n_tokens": 2048,
        },
        "wandb": {"mode": "disabled"},
    }


def _experiment(root: Path, name: str) -> Path:
    exp = root / name
    exp.mkdir(parents=True)
    saved = {"name": name, "model": "builtin:pycode", "run": {}, "axes": {"mode": ["local"], "sparsity_coeff": [1.0]}}
    (exp / "sweep.yaml").write_text(yaml.safe_dump(saved))  # the parts of `sweeps run`'s the report reads
    return exp


def _train_into(exp: Path, scratch_root: Path, run: dict, mode: str, coeff: float, seed: int, **where) -> None:
    """Train one trial with the library and lay it out as Tune persists it."""
    trial = trial_record(mode, coeff, seed=seed, run=run, **where)
    trial_dir = exp / trial.name
    trial_dir.mkdir()
    (trial_dir / "params.json").write_text(json.dumps(trial.tune_config()))
    scratch = scratch_root / "scratch" / trial.name
    final = train(run_config_from_dict(trial.run, {"output_dir": str(scratch)}), progress=False)
    (trial_dir / "result.json").write_text(json.dumps({**final, "training_iteration": 1}) + "\n")
    newest = sorted((scratch / "checkpoints").glob("samples_*"))[-1]
    shutil.copytree(newest, trial_dir / "checkpoint_000000")  # as Tune persists the reported checkpoint


def build_tiny_experiment(root: Path) -> Path:
    """``root/tiny`` with the trials of TRIALS, finished; returns the experiment directory."""
    eval_file = root / "eval.jsonl"
    eval_file.write_text("".join(json.dumps({"text": EVAL_LINES[i % 2] * 3}) + "\n" for i in range(12)))
    exp = _experiment(root, "tiny")
    for mode, seed, coeff in TRIALS:
        _train_into(exp, root, tiny_run(eval_file, mode, seed, coeff), mode, coeff, seed)
    return exp


def build_quickstart_shaped(root: str | Path, n_samples: int = 48) -> Path:
    """``root/quickstart_shaped``: what ``sweeps analyse`` reads from the quickstart (builtin:pycode, modes
    local / e2e / e2e+ds x layers 1, 2 x seeds 0, 1, dictionary ratio 8 = 1024 elements, 8,192 eval
    tokens; the run config of e2e_sae/configs/quickstart_e2e.yaml), one trial per curve at the
    quickstart's starting coefficient, trained for only ``n_samples`` samples: analyse's cost does not
    depend on training length. Used to time analyse (docs/analysis.md), not by the tests."""
    root = Path(root)
    base = yaml.safe_load((Path(__file__).resolve().parents[1] / "e2e_sae/configs/quickstart_e2e.yaml").read_text())
    base["data"]["seed"] = 0  # the quickstart's override: one sample order for every seed
    base["train"].update(n_samples=n_samples, warmup_samples=8, checkpoint_every_n_samples=n_samples)
    exp = _experiment(root, "quickstart_shaped")
    for mode, coeff in (("local", 2.0), ("e2e", 2.0), ("e2e+ds", 4.0)):  # quickstart.yaml's search start
        for layer in (1, 2):
            for seed in (0, 1):
                hook = f"blocks.{layer}.hook_resid_pre"
                _train_into(exp, root, json.loads(json.dumps(base)), mode, coeff, seed, hook=hook, ratio=8.0)
    return exp
