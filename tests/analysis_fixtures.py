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


def build_tiny_experiment(root: Path) -> Path:
    """``root/tiny`` with the trials of TRIALS, finished; returns the experiment directory."""
    eval_file = root / "eval.jsonl"
    eval_file.write_text("".join(json.dumps({"text": EVAL_LINES[i % 2] * 3}) + "\n" for i in range(12)))
    exp = root / "tiny"
    exp.mkdir(parents=True)
    saved = {"name": "tiny", "model": "builtin:pycode", "run": {}, "axes": {"mode": ["local"], "sparsity_coeff": [1.0]}}
    (exp / "sweep.yaml").write_text(yaml.safe_dump(saved))  # the parts of `sweeps run`'s the report reads
    for mode, seed, coeff in TRIALS:
        run = tiny_run(eval_file, mode, seed, coeff)
        trial = trial_record(mode, coeff, seed=seed, run=run)
        trial_dir = exp / trial.name
        trial_dir.mkdir()
        (trial_dir / "params.json").write_text(json.dumps(trial.tune_config()))
        scratch = root / "scratch" / trial.name
        final = train(run_config_from_dict(run, {"output_dir": str(scratch)}), progress=False)
        (trial_dir / "result.json").write_text(json.dumps({**final, "training_iteration": 1}) + "\n")
        newest = sorted((scratch / "checkpoints").glob("samples_*"))[-1]
        shutil.copytree(newest, trial_dir / "checkpoint_000000")  # as Tune persists the reported checkpoint
    return exp
