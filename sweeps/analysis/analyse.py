"""``python -m sweeps analyse PATH [--out DIR] [--trials NAME ...]``: look inside a sweep's dictionaries.

The SAEs to look inside are picked by :mod:`sweeps.analysis.picks` (per hook and mode the frontier SAE
nearest the report's matched level, every mode at one seed, and a seed baseline; or the trials
``--trials`` names). For each,
:mod:`e2e_sae.dictionary` makes one pass over the run's held-out eval tokens; this module writes what
it found: a static feature browser (``index.html``, one page per SAE; :mod:`sweeps.analysis.browser`),
the decoder geometry across modes (``geometry.png``, ``analysis.md``; :mod:`sweeps.analysis.geometry`)
and every number (``analysis.json``).
Everything about one bad input (no finished trial, an unknown trial name, a missing checkpoint, an
existing output directory) is found before any model is loaded. Numbers: docs/analysis.md.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from e2e_sae.config import ConfigError
from e2e_sae.export import check_out  # never overwrites; refuses a path under a file
from sweeps.analysis.geometry import geometry, plot_density, plot_geometry
from sweeps.analysis.picks import select
from sweeps.analysis.tables import ANALYSIS_JSON, geometry_markdown
from sweeps.experiment import ANALYSIS_DIR, ANALYSIS_GEOMETRY_MD, check_experiment, is_remote
from sweeps.reporting.results import read_sweep_meta

N_CONTEXTS = 10  # top-activating contexts per feature
N_PER_KIND = 8  # features per sample kind (most frequent, random, rarest alive)
N_LOGIT_TOKENS = 8  # boosted / suppressed output tokens per feature
SAMPLE_SEED = 0


# ---- running the library pass ---------------------------------------------------------------------


def _context_key(cfg) -> str:
    return json.dumps(
        [cfg.model.model_dump(mode="json"), cfg.data.eval.model_dump(mode="json"), cfg.data.n_ctx,
         cfg.data.n_eval_samples, cfg.train.device],
        sort_keys=True,
    )  # fmt: skip


def analyse_experiment(
    path: str | Path, out: str | Path | None = None, names: list[str] | None = None, log=print
) -> Path:
    """Select, check, analyse and write; returns ``out/index.html``."""
    if is_remote(str(path)):
        raise ConfigError(
            f"{path}: analyse reads the trials' checkpoints from a local directory; copy the experiment "
            "first (e.g. aws s3 sync URI DIR / gsutil -m rsync -r URI DIR) and pass DIR"
        )
    exp_dir = Path(path)
    check_experiment(exp_dir)
    out_dir = Path(out) if out is not None else exp_dir / ANALYSIS_DIR
    check_out(out_dir)
    picks = select(exp_dir, names)
    from e2e_sae.dictionary import analyse_sae, load_eval_context, load_trained_sae

    trained = []
    for p in picks:  # all loaded (small) and checked before any model is
        try:
            tr = load_trained_sae(p.checkpoint)
        except (ValueError, FileNotFoundError, RuntimeError) as err:
            raise ConfigError(f"trial {p.trial.trial_id}: cannot read {p.checkpoint} ({err})") from None
        final_n = p.trial.metrics.get("n_samples")
        if isinstance(final_n, int) and tr.n_samples != final_n:
            raise ConfigError(
                f"trial {p.trial.trial_id}: its newest checkpoint {p.checkpoint} is at {tr.n_samples} samples "
                f"but the final metrics at {final_n}; the final SAE is missing, rerun the trial"
            )
        trained.append(tr)
    contexts: dict[str, Any] = {}
    results = []
    for p, tr in zip(picks, trained, strict=True):
        key = _context_key(tr.cfg)
        if key not in contexts:
            contexts[key] = load_eval_context(tr.cfg)
        ctx = contexts[key]
        start = time.perf_counter()
        result = analyse_sae(
            tr, ctx, k=N_CONTEXTS, n_per_kind=N_PER_KIND, seed=SAMPLE_SEED, n_logit_tokens=N_LOGIT_TOKENS
        )
        log(f"analysed {p.trial.trial_id} ({p.role}) in {time.perf_counter() - start:.1f} s")
        results.append((p, tr, ctx, result))
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_analysis(exp_dir, out_dir, results)


# ---- what gets written ----------------------------------------------------------------------------


def write_analysis(exp_dir: Path, out: Path, results: list) -> Path:
    from sweeps.analysis.browser import write_html

    hooks, raw = geometry(results)
    plot_geometry(raw, out)
    saes = []
    for p, tr, _ctx, res in results:
        t = p.trial
        plot_density(res.stats, f"{t.trial_id} ({t.series}, {t.hook})", out / f"density_{t.trial_id}.png")
        saes.append(
            {
                "trial_id": t.trial_id,
                "role": p.role,
                "mode": t.mode,
                "hook": t.hook,
                "layer": t.layer,
                "seed": t.seed,
                "sparsity_coeff": t.sparsity_coeff,
                "checkpoint": str(p.checkpoint),
                "n_samples": tr.n_samples,
                "trial_metrics": {k: t.metrics.get(k) for k in ("l0", "ce_loss_increase", "alive_dict_elements")},
                "n_dict": int(res.stats.fire_counts.numel()),
                "eval_tokens": res.stats.n_tokens,
                "l0": res.stats.l0,
                "dead": res.stats.n_dead,
                "dense": res.stats.n_dense,
                "norm_ratio": res.stats.norm_ratio,
                "samples": res.samples,
                "page": f"{t.trial_id}.html",
            }
        )
    meta = read_sweep_meta(exp_dir, [r[0].trial for r in results])
    doc = {
        "schema_version": 1,
        "sweep": meta["sweep"],
        "model": meta["model"],
        "experiment": str(exp_dir),
        "saes": saes,
        "hooks": hooks,
        "has_seed_baseline": any(c["seed_baseline"] for h in hooks.values() for c in h["cross"]),
    }
    (out / ANALYSIS_JSON).write_text(json.dumps(_finite(doc), indent=2, allow_nan=False) + "\n")
    geometry_md = geometry_markdown(doc)  # links relative to `out`; the report embeds this file as it is
    (out / ANALYSIS_GEOMETRY_MD).write_text("\n".join(geometry_md) + "\n")
    md = [f"# Inside the dictionaries: {doc['sweep']}", "", _sae_table(saes), "", "## Decoder geometry", ""]
    md += geometry_md
    md += ["Feature browser: [index.html](index.html). Definitions: docs/analysis.md in the repository.", ""]
    (out / "analysis.md").write_text("\n".join(md))
    return write_html(out, doc, results)


def _sae_table(saes: list[dict[str, Any]]) -> str:
    rows = [
        "| trial | role | hook | mode | seed | L0 (eval) | CE-loss increase | dead | dense | norm ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in saes:
        ce = s["trial_metrics"]["ce_loss_increase"]
        seed = "–" if s["seed"] is None else s["seed"]
        rows.append(
            f"| {s['trial_id']} | {s['role']} | {s['hook']} | {s['mode']} | {seed} | {s['l0']:.1f} | "
            f"{ce if ce is None else f'{ce:.3f}'} | {s['dead']} | {s['dense']} | {s['norm_ratio']:.3f} |"
        )
    return "\n".join(rows)


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v
