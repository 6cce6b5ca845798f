"""``python -m sweeps export PATH [--frontier] --out DIR``: an experiment's SAEs as a SAELens release.

``DIR/<sae_id>/`` holds one finished trial's SAE in SAELens's format (``sae_id``: the trial's name;
written by :mod:`e2e_sae.export`), ``DIR/manifest.json`` what each one is (trial, mode, architecture,
hook, coefficient or k, L0, CE-loss increase, the report's frontier membership) and ``DIR/README.md``
the hub's model card. ``huggingface-cli upload USER/REPO DIR`` publishes it, and sae-lens loads each
SAE by name: ``SAE.from_pretrained("USER/REPO", "<sae_id>")`` (an unregistered repo id is read as
``<repo>/<sae_id>/cfg.json``). With ``--frontier`` only the SAEs on a frontier of the report
(:func:`sweeps.reporting.report.compute_pareto`) are exported. Every trial's final checkpoint is found
and checked before anything is written; ``DIR`` must be new or empty.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from e2e_sae.config import ConfigError
from e2e_sae.export import check_out, final_checkpoint, load_for_export
from e2e_sae.finetune import lineage_words
from e2e_sae.saelens_format import SAELENS_FORMAT_VERSION, TO_SAELENS
from sweeps.experiment import check_experiment, is_remote
from sweeps.planning.trial import Trial
from sweeps.reporting.results import load_trials, read_sweep_meta, trial_checkpoints

MANIFEST_FILE = "manifest.json"
MODEL_CARD_FILE = "README.md"
MANIFEST_METRICS = ("l0", "ce_loss_increase", "alive_dict_elements", "explained_variance", "kl", "ce_loss_original")


def frontier_membership(trials: list[Trial], meta: dict[str, Any]) -> dict[str, list[str]]:
    """Per trial id, the report's frontiers it lies on (``l0``, ``alive_dict_elements``: CE-loss increase
    against that metric, within its hook, architecture and mode)."""
    from sweeps.reporting.report import compute_pareto, hook_views

    doc = compute_pareto(trials, meta)
    member: dict[str, list[str]] = {}
    for h in doc["hooks"].values():
        for _, view in hook_views(h):
            for m in view["modes"].values():
                for x, front in m["frontiers"].items():
                    for point in front:
                        member.setdefault(point["trial_id"], []).append(x)
    return member


def sae_id(trial: Trial) -> str:
    """The trial's name as a directory (and SAELens ``sae_id``) name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", trial.trial_id or "trial")


def manifest_entry(trial: Trial, frontiers: list[str], ours: dict[str, Any]) -> dict[str, Any]:
    """One SAE of the manifest; ``ours``: its exported ``cfg.json``'s ``metadata.e2e_sae`` (samples and,
    for a fine-tune, its lineage: what the SAE is, whatever the trial's name says)."""
    lineage = ours["finetune"]
    if lineage is not None and trial.finetune is not None:
        lineage = {**lineage, "parent_trial": trial.finetune.get("parent")}
    return {
        "sae_id": sae_id(trial),
        "trial": trial.trial_id,
        "mode": trial.mode,  # a fine-tune's: its own losses; "finetune" says what it started from
        "trained": lineage_words(lineage, trial.mode, ours["n_samples"]),
        "n_samples": ours["n_samples"],
        "total_n_samples": ours["total_n_samples"],
        "finetune": lineage,
        "architecture": trial.architecture,
        "saelens_architecture": TO_SAELENS.get(trial.architecture),
        "hook": trial.hook,
        "sparsity_coeff": trial.sparsity_coeff,
        "k": trial.k,
        "target_l0": trial.target_l0,
        "dict_size_to_input_ratio": trial.dict_size_to_input_ratio,
        "seed": trial.seed,
        **{k: trial.metrics.get(k) for k in MANIFEST_METRICS},
        "frontiers": sorted(frontiers),
    }


def export_experiment(path: str, out: str | Path, frontier_only: bool) -> Path:
    """Write the release (module docstring) to ``out``; returns the manifest's path."""
    if is_remote(path):
        raise ConfigError(f"{path}: export reads every trial's checkpoint; copy the experiment to a local path first")
    check_experiment(path)
    out = check_out(out)
    trials = load_trials(path)
    meta = read_sweep_meta(Path(path), trials)
    membership = frontier_membership(trials, meta)
    chosen = [t for t in trials if t.state == "finished" and (not frontier_only or t.trial_id in membership)]
    if not chosen:
        which = "on a frontier" if frontier_only else "finished"
        raise ConfigError(f"{path}: no {which} trial to export (python -m sweeps status {path})")
    checkpoints = {}
    for t in chosen:  # every check before anything is written
        ckpts = trial_checkpoints(t)
        if not ckpts:
            raise ConfigError(f"{path}: trial {t.trial_id} finished but Tune persisted no checkpoint of it")
        checkpoints[t.trial_id] = final_checkpoint(ckpts[-1])
    if len({sae_id(t) for t in chosen}) != len(chosen):
        raise ConfigError(f"{path}: two trials share a directory name; rename them (nothing was written)")
    entries = []
    for t in chosen:
        exported = load_for_export(checkpoints[t.trial_id])
        exported.write(out / sae_id(t))
        entries.append(manifest_entry(t, membership.get(t.trial_id or "", []), exported.cfg["metadata"]["e2e_sae"]))
    manifest = {
        "sweep": meta["sweep"],
        "model": meta["model"],
        "format": f"saelens {SAELENS_FORMAT_VERSION} (cfg.json + sae_weights.safetensors per SAE)",
        "frontier_only": frontier_only,
        "saes": entries,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    (out / MODEL_CARD_FILE).write_text(model_card(manifest))
    return out / MANIFEST_FILE


def model_card(manifest: dict[str, Any]) -> str:
    """The hub's README.md: what the SAEs are and how to load one."""
    rows = [
        f"| `{e['sae_id']}` | {e['trained']} | {e['architecture']} | `{e['hook']}` | "
        f"{_fmt(e['k'] if e['k'] is not None else e['sparsity_coeff'])} | {_fmt(e['l0'])} | "
        f"{_fmt(e['ce_loss_increase'])} | "
        f"{', '.join(e['frontiers']) or '-'} |"
        for e in manifest["saes"]
    ]
    first = manifest["saes"][0]["sae_id"]
    return "\n".join(
        [
            "---",
            "library_name: saelens",
            "---",
            "",
            f"# SAEs of sweep `{manifest['sweep']}` on `{manifest['model']}`",
            "",
            "Trained with e2e_sae (end-to-end sparse dictionary learning, Braun et al. 2024); one SAELens "
            "directory per SAE, described in `manifest.json`.",
            *_finetune_note(manifest["saes"]),
            "",
            "```python",
            "from sae_lens import SAE",
            "",
            f'sae = SAE.from_pretrained("<this repo id>", "{first}")',
            "```",
            "",
            "| sae_id | trained | architecture | hook | coeff or k | L0 | CE-loss increase | frontiers |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
        ]
    )


def _finetune_note(entries: list[dict[str, Any]]) -> list[str]:
    """For a release with fine-tunes: what their rows mean (a fine-tune is not an SAE trained from scratch
    in its mode)."""
    if not any(e["finetune"] for e in entries):
        return []
    return [
        "A fine-tuned SAE (Karvonen 2025) started from its parent's SAE; its row says the parent's mode and "
        "samples and the fine-tune's losses and samples (`manifest.json`: `finetune`, `total_n_samples`)."
    ]


def _fmt(v: Any) -> str:
    """4 significant digits: a searched coefficient (0.34955521829) reads as the trial name does (0.3496);
    the manifest keeps the exact value."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)
