"""Export a finished run's SAE: ``python -m e2e_sae.export RUN_OR_CHECKPOINT --format saelens --out DIR``.

``RUN_OR_CHECKPOINT`` is a run's output directory (its final checkpoint is exported), a checkpoint
directory or its ``checkpoint.pt``, or a sweep's trial as ``EXPERIMENT/TRIAL`` (the name ``sweeps
status`` lists, a grouped trial's member too: :func:`e2e_sae.sae_source.find_sae`); only a finished
run's final checkpoint (the one holding the run's final metrics) is exported. ``DIR`` gets ``cfg.json``
and ``sae_weights.safetensors``, which sae-lens 6 loads with ``SAE.load_from_disk(DIR)``:
:func:`to_saelens` (conventions: :mod:`e2e_sae.saelens_format`, docs/export.md).
Bad input (an unfinished run, an architecture SAELens cannot represent, an existing non-empty DIR) is
one line on stderr and exit 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from e2e_sae.architectures import saved_architecture
from e2e_sae.architectures.batchtopk import BatchTopK
from e2e_sae.architectures.jumprelu import JumpReLU
from e2e_sae.architectures.topk import TopK
from e2e_sae.config import ConfigError, run_config_from_dict
from e2e_sae.finetune import export_lineage, lineage_words
from e2e_sae.run_dir import CHECKPOINT_FILE, METRICS_FILE, RunDir
from e2e_sae.sae import SAE, build_sae
from e2e_sae.sae_source import find_sae, load_sae_blob
from e2e_sae.saelens_format import SAELENS_FORMAT_VERSION, TO_SAELENS, SAELensSAE, model_from_pretrained_kwargs

FORMATS = ("saelens",)


def saelens_weights(sae: SAE) -> dict[str, Tensor]:
    """The SAE's weights in SAELens's names and layout, the input scale folded in (module docstring);
    computed in float64, stored in the SAE's dtype."""
    dtype = sae.decoder.weight.dtype
    s = 1.0 if sae.input_scale is None else float(sae.input_scale)
    enc = cast(nn.Linear, sae.encoder[0])
    w_e, b_e = enc.weight.detach().double(), enc.bias.detach().double()
    unit = F.normalize(sae.decoder.weight.detach().double(), dim=0)  # [d_in, n_dict]
    weights = {
        "W_enc": s * w_e.t(),
        "b_enc": b_e,
        "W_dec": unit.t() / s,
        "b_dec": sae.decoder.bias.detach().double() / s,
    }
    if isinstance(sae.arch, JumpReLU):
        weights["threshold"] = sae.arch.log_threshold.detach().double().exp()
    elif isinstance(sae.arch, BatchTopK):  # Matryoshka's too: its evaluation is the same threshold
        weights["threshold"] = torch.full_like(b_e, float(sae.arch.threshold))
    return {k: v.to(dtype) for k, v in weights.items()}


def to_saelens(sae: SAE, run: dict[str, Any], extra: dict[str, Any] | None = None) -> SAELensSAE:
    """Our ``sae`` (trained under the resolved run config ``run``, a dict) in SAELens's format.
    ``extra`` joins ``metadata.e2e_sae`` (e.g. the run's final metrics)."""
    name = sae.arch.name
    if name not in TO_SAELENS:
        raise ValueError(f"sae.architecture {name}: SAELens cannot represent it; exportable: {', '.join(TO_SAELENS)}")
    model, data, sae_cfg = run.get("model") or {}, run.get("data") or {}, run.get("sae") or {}
    processing = model.get("weight_processing") or "none"
    cfg: dict[str, Any] = {
        "architecture": TO_SAELENS[name],
        "d_in": sae.d_in,
        "d_sae": sae.n_dict_elements,
        "dtype": str(sae.decoder.weight.dtype).removeprefix("torch."),
        "device": "cpu",
        "apply_b_dec_to_input": sae.arch.subtracts_b_dec,
        "normalize_activations": "none",  # the input scale is folded into the weights
        "reshape_activations": "none",
    }
    if isinstance(sae.arch, TopK):
        cfg |= {"k": sae.arch.k, "rescale_acts_by_decoder_norm": False}
    knobs = {k: sae_cfg[k] for k in ("k", "matryoshka_prefixes", "jumprelu_bandwidth") if sae_cfg.get(k) is not None}
    cfg["metadata"] = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,  # the format written, not a SAELens that trained it
        "sae_lens_training_version": None,
        "model_name": model.get("name"),
        "model_class_name": "HookedTransformer",
        "model_from_pretrained_kwargs": model_from_pretrained_kwargs(processing),
        "hook_name": sae_cfg.get("position"),
        "hook_head_index": None,
        "context_size": data.get("n_ctx"),
        "prepend_bos": False,  # our samples are windows of the token stream, no BOS put in front
        "dataset_path": (data.get("train") or {}).get("name"),
        "training_architecture": name,
        "training_architecture_details": knobs,
        "e2e_sae": {
            "mode": run.get("mode"),
            "architecture": name,
            "input_normalization": sae.input_normalization,
            "input_scale": None if sae.input_scale is None else float(sae.input_scale),
            "weight_processing": processing,
            "sparsity_coeff": ((run.get("loss") or {}).get("sparsity") or {}).get("coeff"),
            **(extra or {}),
        },
    }
    return SAELensSAE(cfg, saelens_weights(sae))


def final_checkpoint(source: str | Path) -> Path:
    """The checkpoint directory to export for what ``source`` names (:func:`e2e_sae.sae_source.find_sae`:
    a run directory, checkpoint directory or file, a sweep trial or grouped member by name); ConfigError
    unless it is a finished run's final checkpoint."""
    path = find_sae(source, "RUN_OR_CHECKPOINT")
    if path.is_file() and path.name != CHECKPOINT_FILE:
        raise ConfigError(
            f"RUN_OR_CHECKPOINT: {source} is not a {CHECKPOINT_FILE} of e2e_sae; pass a run's output_dir, a "
            "checkpoint directory or its checkpoint.pt, or a sweep trial EXPERIMENT/TRIAL"
        )
    path = path.parent if path.is_file() else path
    if not (path / CHECKPOINT_FILE).is_file():
        raise ConfigError(f"RUN_OR_CHECKPOINT: {source} is an SAELens directory already; nothing to export")
    if Path(source).is_dir() and RunDir(source).checkpoints.is_dir() and not RunDir(source).metrics.is_file():
        raise ConfigError(f"{source}: an unfinished run (no {METRICS_FILE}); export it once it has finished")
    if not _is_final(path / METRICS_FILE):
        raise ConfigError(
            f"{source}: not a finished run's final checkpoint (only that one holds the final {METRICS_FILE}); "
            "export the finished run's directory"
        )
    return path


def _is_final(metrics: Path) -> bool:
    try:
        return metrics.is_file() and json.loads(metrics.read_text()).get("final") is True
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def check_out(out: str | Path) -> Path:
    """``out`` must be new or an empty directory (an export never overwrites), and creatable: every
    existing folder above it a directory (else ``mkdir`` fails mid-export with NotADirectoryError)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"--out: {out} already exists and is not an empty directory; choose another (nothing was written)"
        )
    return check_under_directory(out)


def check_under_directory(out: Path, field: str = "--out") -> Path:
    """``out`` is a directory or can be created as one: neither it nor the nearest existing folder above
    it is a file."""
    here = out.absolute()
    found = next((p for p in (here, *here.parents) if p.exists()), None)
    if found is not None and not found.is_dir():
        where = "is a file" if found == here else f"lies under {found}, which is a file"
        raise ConfigError(f"{field}: {out} {where}; choose a path in a directory (nothing was written)")
    return out


def load_for_export(checkpoint_dir: Path, fmt: str = "saelens") -> SAELensSAE:
    """The SAE of a final checkpoint directory (:func:`final_checkpoint`) in ``fmt``, in memory."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    try:
        blob = load_sae_blob(checkpoint_dir / CHECKPOINT_FILE)
    except ValueError as err:
        raise ConfigError(f"RUN_OR_CHECKPOINT: {err}") from None
    config = blob.get("config") if isinstance(blob, dict) else None
    if not isinstance(config, dict) or not isinstance(blob.get("sae"), dict):  # blob: a dict, as config is
        raise ConfigError(f"{checkpoint_dir}: not a training checkpoint of e2e_sae (no config or SAE state)")
    architecture = saved_architecture(config)
    if architecture not in TO_SAELENS:
        raise ConfigError(
            f"{checkpoint_dir}: sae.architecture {architecture} has no SAELens counterpart; exportable: "
            f"{', '.join(TO_SAELENS)}"
        )
    cfg = run_config_from_dict(config)
    n_dict, d_in = blob["sae"]["encoder.0.weight"].shape
    sae = build_sae(cfg, d_in, n_dict)
    sae.load_state_dict(blob["sae"])
    final = json.loads((checkpoint_dir / METRICS_FILE).read_text())
    n_samples = int(blob.get("n_samples", 0))
    lineage = export_lineage(config, {"n_samples": n_samples, **final})  # a fine-tune: its parent, mode, length
    extra: dict[str, Any] = {
        "n_samples": n_samples,  # this run's own; total_n_samples counts a fine-tune's parents too
        "total_n_samples": lineage["total_n_samples"] if lineage is not None else n_samples,
        "finetune": lineage,
        "final_metrics": {k: v for k, v in final.items() if isinstance(v, (int, float, str, bool))},
    }
    return to_saelens(sae, cfg.to_dict(), extra)


def export(source: str | Path, out: str | Path, fmt: str = "saelens") -> SAELensSAE:
    """Export the final checkpoint of ``source`` to the new directory ``out``; every check first."""
    out = check_out(out)
    exported = load_for_export(final_checkpoint(source), fmt)
    exported.write(out)
    return exported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e_sae.export", description=__doc__.split("\n")[0])
    parser.add_argument(
        "source",
        metavar="RUN_OR_CHECKPOINT",
        help="a finished run's directory, its checkpoint, or a sweep trial EXPERIMENT/TRIAL",
    )
    parser.add_argument("--format", default="saelens", choices=FORMATS, help="the on-disk format (default saelens)")
    parser.add_argument("--out", required=True, help="the SAE's directory, new or empty (never overwritten)")
    args = parser.parse_args(argv)
    try:
        cfg = export(args.source, args.out, args.format).cfg
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    meta = cfg["metadata"]
    shape = f"d_in={cfg['d_in']} d_sae={cfg['d_sae']}"
    print(f"{cfg['architecture']} SAE, {shape}, {meta['hook_name']} of {meta['model_name']}")
    ours = meta["e2e_sae"]
    if ours["finetune"] is not None:
        print(f"trained: {lineage_words(ours['finetune'], ours['mode'], ours['n_samples'])}")
    print(f"wrote {args.out} (load with sae_lens.SAE.load_from_disk({str(args.out)!r}))")
    return 0


if __name__ == "__main__":
    from e2e_sae.cli_exit import exit_with

    exit_with(main)
