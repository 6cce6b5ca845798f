"""What a target search's curve starts from: its dictionary's size and its first coefficient or k.

Why scale the first coefficient: an unnormalised relu SAE's sparsity term (``||c||_1 / d_in``) grows
with the activations' scale ``s`` at its hook, the local MSE with ``s^2`` and e2e's KL not at all, so one
coefficient weighs ``s``-times differently at different layers. On the built-in model the mean norm of
``hook_resid_pre`` is 1.19 at layer 0 against 23-25 at layers 1-2: a local coefficient of 1 there is ~20x
too strong and every trial degenerated (docs/sweeps.md). So where ``search.start`` gives none, a curve
whose SAE sees raw activations (``sae.input_normalization: none``) starts at
``1.0 * (norm / sqrt(d_in)) ** p``: ``norm`` the hook's mean activation norm measured on a few eval
sequences before the sweep (cached), ``sqrt(d_in)`` what an SAE with input normalisation sees (where a
coefficient of 1 is the default), ``p`` +1 for local (MSE against L1) and -1 for e2e and e2e+ds (KL
against L1). A start the user gives is kept as given.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from e2e_sae.architectures.spec import PENALISED
from e2e_sae.config import RunConfig
from e2e_sae.model_shape import ModelShape

DEFAULT_START = 1.0  # the first coefficient without search.start, at the normalised scale sqrt(d_in)
NORM_SEQUENCES = 16  # eval sequences the activation norm is measured on (cheap, and stable to a few %)
SCALE_POWER = {"local": 1.0, "e2e": -1.0, "e2e+ds": -1.0}  # coefficient ~ norm ** p (module docstring)


@dataclass(frozen=True)
class CurveStart:
    """A curve's dictionary size (None: the model's shape is unknown), its first coefficient or k, and
    where that came from (for ``plan``)."""

    n_dict: int | None
    start: float
    why: str = ""


def curve_starts(
    configs: Sequence[RunConfig], knobs: Sequence[float | None], given: Sequence[bool], shape: ModelShape | None
) -> list[CurveStart]:
    """Per curve template: ``knobs`` its planned first coefficient (or k, never scaled), ``given``
    whether the sweep file set it (search.start: kept). With the model's ``shape`` known, the others
    are scaled to the hook's measured activation norm (module docstring)."""
    scaled = [
        i
        for i, cfg in enumerate(configs)
        if shape is not None
        and not given[i]
        and cfg.sae.architecture in PENALISED
        and (cfg.sae.input_normalization or "none") == "none"
    ]
    norms, unmeasured = _measured_norms(configs, scaled)
    out = []
    for i, (cfg, knob) in enumerate(zip(configs, knobs, strict=True)):
        n_dict = round(cfg.sae.dict_size_to_input_ratio * shape.d_model) if shape is not None else None
        if i not in scaled or shape is None or unmeasured:
            out.append(CurveStart(n_dict, float(knob or DEFAULT_START), unmeasured if i in scaled else ""))
            continue
        norm, ref, p = norms[cfg.sae.position], math.sqrt(shape.d_model), SCALE_POWER[cfg.mode]
        start = float(f"{DEFAULT_START * (norm / ref) ** p:.3g}")
        why = (
            f"{DEFAULT_START:g} x ({norm:.3g} / {ref:.3g}){'' if p == 1 else f'^{p:g}'}: {cfg.sae.position}'s mean "
            f"activation norm against sqrt(d_in), on {NORM_SEQUENCES} eval sequences; search.start sets it"
        )
        out.append(CurveStart(n_dict, start, why))
    return out


def _measured_norms(configs: Sequence[RunConfig], scaled: list[int]) -> tuple[dict[str, float], str]:
    """The scaled curves' hooks' activation norms, or (``{}``, why not) when the model or its eval data
    cannot be loaded here (offline without a cache, say): the curves then start unscaled, and ``plan``
    says so in one line instead of failing."""
    if not scaled:
        return {}, ""
    try:
        return activation_norms(configs[scaled[0]], sorted({configs[i].sae.position for i in scaled})), ""
    except Exception as err:  # noqa: BLE001 - any load failure (hub, files) leaves the start unscaled
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        return {}, (
            f"{DEFAULT_START:g}, unscaled: the activation norm could not be measured here ({first}); "
            "set search.start, or plan where the model loads"
        )


def activation_norms(cfg: RunConfig, hooks: list[str]) -> dict[str, float]:
    """Mean ||a|| over the tokens of the first NORM_SEQUENCES eval sequences at each of ``hooks`` of
    ``cfg``'s model, cached per model, eval data and hook (measured on CPU once)."""
    from e2e_sae.builtin.catalog import cache_dir

    path = cache_dir() / "activation_norms.json"
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    keys = {h: _key(cfg, h) for h in hooks}
    missing = [h for h in hooks if keys[h] not in cache]
    if missing:
        cache.update({keys[h]: v for h, v in _measure(cfg, missing).items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # one per process: concurrent plans never share it
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        tmp.replace(path)
    return {h: float(cache[keys[h]]) for h in hooks}


def _key(cfg: RunConfig, hook: str) -> str:
    what = {
        "model": cfg.model.model_dump(mode="json"),
        "eval": cfg.data.eval.model_dump(mode="json"),
        "tokenizer": cfg.data.tokenizer,
        "n_ctx": cfg.data.n_ctx,
        "n": min(cfg.data.n_eval_samples, NORM_SEQUENCES),
        "hook": hook,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _measure(cfg: RunConfig, hooks: list[str]) -> dict[str, float]:
    import torch

    from e2e_sae.data import load_eval_tokens
    from e2e_sae.lm import load_language_model
    from e2e_sae.tokenizer import resolve_tokenizer

    with contextlib.redirect_stdout(io.StringIO()):  # TransformerLens prints where it moves the model
        model = load_language_model(cfg.model.name, cfg.model.native, "cpu", cfg.model.weight_processing or "none")
    tokens = load_eval_tokens(
        cfg.data.eval, cfg.data.n_ctx, min(cfg.data.n_eval_samples, NORM_SEQUENCES), resolve_tokenizer(cfg, model)
    )
    sums, count = dict.fromkeys(hooks, 0.0), 0
    with torch.no_grad():
        for batch in tokens.split(cfg.data.eval_batch_size):
            _, cache = model.run_with_cache(batch, names_filter=lambda name: name in hooks)
            for h in hooks:
                sums[h] += float(cache[h].float().norm(dim=-1).sum())
            count += batch.numel()
    return {h: sums[h] / count for h in hooks}
