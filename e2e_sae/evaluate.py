"""Score an existing SAE on a model and an eval set: ``python -m e2e_sae.evaluate CONFIG --sae SAE --out DIR``.

``CONFIG`` is a run config (a shipped one, or a run's ``config.yaml``): its ``model``, ``data.eval``,
``data.n_ctx`` / ``n_eval_samples`` / ``eval_batch_size`` and ``train.device`` are used. ``--sae`` is
anything :func:`e2e_sae.sae_source.find_sae` resolves: one of our runs or checkpoints, a sweep trial
``EXPERIMENT/TRIAL`` (a grouped member by its name too), a file in the authors' ``saes.state_dict()``
key format (``blocks-6-hook_resid_pre.encoder.0.weight``; ``--position`` picks one of several), or an
SAELens directory (:mod:`e2e_sae.saelens_format`). What the SAE is comes from its file, not from
CONFIG: its architecture and knobs, input normalisation, hook (unless ``--position``), sparsity term's
shape and dictionary size (:meth:`e2e_sae.sae_source.SAEFile.identity`); ``--set`` says otherwise on purpose.
The SAE is then loaded and checked exactly as ``sae.pretrained_path`` is for training (weight
processing, d_in), errors naming ``--sae``, and scored by the training run's own eval
(:func:`e2e_sae.metrics.evaluate`), so ``DIR/metrics.json`` holds the metrics a training run reports.
``alive_dict_elements`` counts elements that fired on the eval tokens (``alive_window_tokens`` says how
many); training counts them over training tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from e2e_sae.assemble import load_checked_model, read_pretrained_sae, resolve_device, splice_sae
from e2e_sae.config import (
    ConfigError,
    RunConfig,
    add_set_argument,
    apply_overrides,
    parse_overrides,
    read_yaml_mapping,
    run_config_from_dict,
)
from e2e_sae.data import check_source_exists, load_eval_tokens
from e2e_sae.metrics import ActivationFrequency, evaluate
from e2e_sae.run_dir import RunDir
from e2e_sae.sae import read_sae_file
from e2e_sae.sae_source import find_sae
from e2e_sae.saelens_format import is_saelens_dir
from e2e_sae.tokenizer import check_tokenizer, resolve_tokenizer
from e2e_sae.validate import check_hook, check_n_ctx, model_shape


def eval_config(
    config: str | Path,
    sae_path: str | Path,
    out: str | Path,
    position: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """The run config with ``sae.pretrained_path`` (what ``--sae`` names: :func:`e2e_sae.sae_source.find_sae`),
    ``output_dir`` and ``sae.position`` set, the dictionary size taken from the SAE file (so the
    config's ratio need not match it), and what the SAE is taken from it too
    (:meth:`e2e_sae.sae_source.SAEFile.identity`); ``overrides`` (``--set``, said on purpose) win over those."""
    source = find_sae(sae_path, "--sae")
    raw = apply_overrides(read_yaml_mapping(config), overrides)
    pick = position or (raw.get("sae") or {}).get("position")  # the authors' files hold one SAE per hook
    try:
        sae_file = read_sae_file(source, None if is_saelens_dir(source) else pick)
    except ValueError as err:
        hint = "; pass --position" if "cannot pick one SAE" in str(err) else ""
        raise ConfigError(f"--sae: {err}{hint}") from None
    identity = sae_file.identity()
    if "sae.architecture" in (overrides or {}):  # said on purpose: refused below unless it is the SAE's
        identity = {k: v for k, v in identity.items() if k in ("sae.position", "sae.input_normalization")}
    fixed = {**identity, **(overrides or {})}
    fixed["sae.pretrained_path"] = str(source)
    fixed["finetune"] = None  # a fine-tune's config: the SAE evaluated is --sae, not its parent
    fixed["output_dir"] = str(out)
    if position is not None:
        fixed["sae.position"] = position
    n_dict, d_in = sae_file.state["encoder.0.weight"].shape
    fixed["sae.dict_size_to_input_ratio"] = n_dict / d_in
    cfg = run_config_from_dict(raw, fixed)
    read_pretrained_sae(cfg, field="--sae")  # the checks training makes, naming --sae; before the model loads
    return cfg


def evaluate_sae(cfg: RunConfig, field: str = "--sae") -> dict[str, Any]:
    """Load model and SAE (``sae.pretrained_path``; errors name ``field``), score it on the fixed eval
    set, write ``output_dir/metrics.json``."""
    metrics_path = RunDir(cfg.output_dir).metrics
    if metrics_path.exists():
        raise ConfigError(f"--out: {metrics_path} already exists; choose another directory (nothing was written)")
    shape = model_shape(cfg.model)
    check_hook(cfg.sae.position, "sae.position", shape)
    if shape is not None:
        check_n_ctx(cfg.data.n_ctx, shape.n_ctx)
    check_source_exists(cfg.data.eval, "data.eval")
    device = resolve_device(cfg.train.device)
    pretrained = read_pretrained_sae(cfg, field=field)  # before the model loads
    spliced = splice_sae(cfg, load_checked_model(cfg, device), device, pretrained, field)
    tokenizer = resolve_tokenizer(cfg, spliced.model)
    check_tokenizer(cfg, tokenizer, eval_only=True)
    eval_tokens = load_eval_tokens(cfg.data.eval, cfg.data.n_ctx, cfg.data.n_eval_samples, tokenizer)
    sae = spliced.sae.eval()
    act_freq = ActivationFrequency(sae.n_dict_elements, eval_tokens.numel() + 1, device)
    metrics = evaluate(spliced, eval_tokens, cfg.data.eval_batch_size, act_freq=act_freq)
    alive, window = act_freq.alive()
    result = {
        **metrics,
        "alive_dict_elements": alive,
        "alive_window_tokens": window,
        "n_dict_elements": sae.n_dict_elements,
        "sae": str(cfg.sae.pretrained_path),
        "position": cfg.sae.position,
        "model": cfg.model.name or "model.native",
        "weight_processing": cfg.model.weight_processing,
    }
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    tmp = metrics_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(metrics_path)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e_sae.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="run config YAML (model, data.eval, sae.position are used)")
    parser.add_argument(
        "--sae",
        required=True,
        help="SAE: our run or checkpoint, a sweep trial EXPERIMENT/TRIAL, the authors' file, or an SAELens directory",
    )
    parser.add_argument("--out", required=True, help="directory for metrics.json (must not hold one)")
    parser.add_argument(
        "--position", help="hook point of the SAE (default: the one its file records, else the config's sae.position)"
    )
    add_set_argument(parser)
    args = parser.parse_args(argv)
    try:
        cfg = eval_config(args.config, args.sae, args.out, args.position, parse_overrides(args.overrides))
        metrics = evaluate_sae(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    keys = [
        "l0",
        "alive_dict_elements",
        "ce_loss_increase",
        "kl",
        "explained_variance",
        "explained_variance_per_token_mean",
    ]
    print(" ".join(f"{k}={metrics[k]:.4g}" for k in keys))
    print(f"wrote {RunDir(cfg.output_dir).metrics}")
    return 0


if __name__ == "__main__":
    from e2e_sae.cli_exit import exit_with

    exit_with(main)
