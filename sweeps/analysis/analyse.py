"""``python -m sweeps analyse PATH [--out DIR] [--trials NAME ...]``: look inside a sweep's dictionaries.

Picks, per (hook, mode), the frontier SAE closest to the report's matched CE-loss increase (the
report's own frontiers and matched level, :func:`sweeps.reporting.report.compute_pareto`), plus another seed
of the same mode as a baseline when the sweep has one; or exactly the trials named by ``--trials``.
For each, :mod:`e2e_sae.dictionary` makes one pass over the run's held-out eval tokens; this module
writes what it found: a static feature browser (``index.html``, one page per SAE), the decoder
geometry across modes (``geometry.png``, ``analysis.md``) and every number (``analysis.json``).
Everything about one bad input (no finished trial, an unknown trial name, a missing checkpoint, an
existing output directory) is found before any model is loaded. Numbers: docs/analysis.md.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e_sae.config import ConfigError
from e2e_sae.modes import in_mode_order
from sweeps.analysis.tables import ANALYSIS_JSON, GEOMETRY_PNG, geometry_markdown
from sweeps.experiment import ANALYSIS_DIR, is_remote
from sweeps.planning.trial import Trial
from sweeps.reporting.results import load_trials, read_sweep_meta, trial_checkpoints

N_CONTEXTS = 10  # top-activating contexts per feature
N_PER_KIND = 8  # features per sample kind (most frequent, random, rarest alive)
N_LOGIT_TOKENS = 8  # boosted / suppressed output tokens per feature
SAMPLE_SEED = 0


@dataclass
class Pick:
    trial: Trial
    role: str  # "frontier" (closest to the matched level), "named" (--trials) or "seed baseline"
    checkpoint: Path


# ---- choosing trials and their checkpoints ------------------------------------------------------


def final_checkpoint(trial: Trial) -> Path | None:
    """The trial's newest checkpoint file in the storage: Tune's ``checkpoint_NNNNNN/`` in the trial
    directory (a group member's part of it under its name), or None."""
    from e2e_sae.checkpoint import CHECKPOINT_FILE

    files = [p / CHECKPOINT_FILE for p in trial_checkpoints(trial) if (p / CHECKPOINT_FILE).is_file()]
    return files[-1] if files else None


def _frontier_picks(exp_dir: Path, trials: list[Trial]) -> list[tuple[Trial, str]]:
    """Per hook and mode, the L0-frontier trial whose CE-loss increase is closest to the matched
    level; then, for each, the finished trial of the same hook, mode and dictionary ratio with another
    seed whose CE-loss increase is closest to it (the seed baseline), if any."""
    from sweeps.reporting.report import compute_pareto

    doc = compute_pareto(trials, read_sweep_meta(exp_dir, trials))
    by_id = {t.trial_id: t for t in trials}
    picks: list[tuple[Trial, str]] = []
    for h in doc["hooks"].values():
        level = h["matched"]["ce_loss_increase"]
        for m in h["modes"].values():
            front = m["frontiers"]["l0"]
            if not front or level is None:
                continue
            best = min(front, key=lambda p: (abs(p["metrics"]["ce_loss_increase"] - level), p["trial_id"]))
            picks.append((by_id[best["trial_id"]], "frontier"))
    for t, _ in list(picks):
        others = [
            o
            for o in trials
            if o.state == "finished"
            and (o.hook, o.mode, o.dict_size_to_input_ratio) == (t.hook, t.mode, t.dict_size_to_input_ratio)
            and o.seed != t.seed
        ]
        ce = _ce(t)
        if others:
            picks.append((min(others, key=lambda o: (abs(_ce(o) - ce), o.trial_id)), "seed baseline"))
    return picks


def _ce(t: Trial) -> float:
    v = t.metrics.get("ce_loss_increase")
    return float(v) if isinstance(v, (int, float)) else math.inf


def select(exp_dir: Path, names: list[str] | None) -> list[Pick]:
    """The SAEs to analyse, each with its final checkpoint; one-line ConfigErrors for bad input."""
    trials = load_trials(exp_dir)
    finished = [t for t in trials if t.state == "finished"]
    if not finished:
        states = ", ".join(f"{t.trial_id} {t.state}" for t in trials[:5]) or "no trials at all"
        raise ConfigError(
            f"{exp_dir}: no finished trials to analyse ({states}); run or resume the sweep first "
            f"(python -m sweeps status {exp_dir})"
        )
    if names:
        by_id = {t.trial_id: t for t in trials}
        for name in names:
            if name not in by_id:
                known = ", ".join(str(t.trial_id) for t in finished[:4]) + (", ..." if len(finished) > 4 else "")
                raise ConfigError(f"--trials: no trial named {name} in {exp_dir}; finished trials there: {known}")
            if by_id[name].state != "finished":
                raise ConfigError(f"--trials: {name} is {by_id[name].state}, not finished; only finished SAEs")
        chosen = [(by_id[n], "named") for n in dict.fromkeys(names)]
    else:
        chosen = _frontier_picks(exp_dir, trials)
        if not chosen:
            raise ConfigError(
                f"{exp_dir}: no frontier trial to analyse (every finished trial is degenerate or lacks "
                "metrics); name trials with --trials"
            )
    picks = []
    for t, role in chosen:
        ckpt = final_checkpoint(t)
        if ckpt is None:
            raise ConfigError(
                f"trial {t.trial_id}: no checkpoint in {t.path} (checkpoint_*/); "
                "analyse needs the trained SAE: leave it out with --trials, or rerun the trial"
            )
        picks.append(Pick(t, role, ckpt))
    return picks


def check_out(out: Path) -> None:
    """Never overwrite an analysis: a non-empty output directory is refused."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out: {out} already exists; pass another --out or delete it first (nothing was written)")


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


def _summary(values) -> dict[str, Any]:
    v = values.double()
    return {
        "mean": float(v.mean()),
        "median": float(v.median()),
        "frac_above_0.9": float((v > 0.9).double().mean()),
        "n": int(v.numel()),
    }


def _init_stats(res, alive) -> tuple[dict[str, Any], Any]:
    """Against the run's initial decoder: the within-SAE nearest-neighbour similarities it started
    from (their mean, and the values for the plot), and each alive element's cosine similarity to
    its own initial direction (mean)."""
    from e2e_sae.dictionary import max_cos_sim_within

    if res.init_directions is None or int(alive.sum()) < 2:
        return {"init_mean": None, "to_init_mean": None}, None
    init = res.init_directions[:, alive]
    within = max_cos_sim_within(init)
    stats = {
        "init_mean": float(within.double().mean()),
        "to_init_mean": float((init * res.directions[:, alive]).sum(0).double().mean()),
    }
    return stats, within


def geometry(results: list) -> tuple[dict[str, Any], dict[str, Any]]:
    """(analysis.json's ``hooks`` part, the raw per-element similarities for the plot)."""
    from e2e_sae.dictionary import max_cos_sim_across, max_cos_sim_within

    hooks: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    ordered = sorted(results, key=lambda r: (r[0].trial.layer or 0, str(r[0].trial.hook)))
    for p, _tr, _ctx, res in ordered:
        hook = str(p.trial.hook)
        h = hooks.setdefault(
            hook, {"layer": p.trial.layer, "within": {}, "cross": [], "norm_ratio": {}, "local_minus": {}}
        )
        r = raw.setdefault(hook, {"within": {}, "cross": {}, "primary": {}, "baseline": {}, "init": {}})
        alive = res.stats.fire_counts > 0
        dirs = res.directions[:, alive]
        mode = str(p.trial.mode)
        if mode in r["primary"]:  # a second SAE of this mode at this hook: a seed baseline candidate
            if p.trial.seed != r["primary"][mode][0].trial.seed and mode not in r["baseline"]:
                r["baseline"][mode] = (p, dirs)
            continue
        r["primary"][mode] = (p, dirs)
        within = max_cos_sim_within(dirs) if dirs.shape[1] > 1 else None
        r["within"][mode] = within
        init_stats, init_within = _init_stats(res, alive)
        if init_within is not None:
            r["init"].setdefault(p.trial.seed, init_within)
        h["within"][mode] = {
            "trial_id": p.trial.trial_id,
            "n_alive": int(alive.sum()),
            "n_dict": int(alive.numel()),
            **(_summary(within) if within is not None else {"mean": None, "median": None}),
            **init_stats,
        }
        h["norm_ratio"][mode] = res.stats.norm_ratio
    for hook, h in hooks.items():
        r = raw[hook]
        modes = in_mode_order(r["primary"])
        h["within"] = {m: h["within"][m] for m in modes}
        h["norm_ratio"] = {m: h["norm_ratio"][m] for m in modes}
        local = h["within"].get("local", {}).get("mean")
        for m in modes:
            if m != "local" and local is not None and h["within"][m]["mean"] is not None:
                h["local_minus"][m] = local - h["within"][m]["mean"]
        pairs = []
        if "local" in r["primary"]:
            for m in modes:
                if m != "local":
                    pairs += [(m, r["primary"][m], "local", r["primary"]["local"])]
                    pairs += [("local", r["primary"]["local"], m, r["primary"][m])]
        for m, base in r["baseline"].items():
            first = r["primary"][m]
            pairs += [
                (f"{m} seed {first[0].trial.seed}", first, f"{m} seed {base[0].trial.seed}", base),
                (f"{m} seed {base[0].trial.seed}", base, f"{m} seed {first[0].trial.seed}", first),
            ]
        for a_name, (pa, da), b_name, (pb, db) in pairs:
            if da.shape[1] == 0 or db.shape[1] == 0:
                continue
            sims = max_cos_sim_across(da, db)
            label = f"{a_name} -> {b_name}"
            r["cross"][label] = sims
            h["cross"].append(
                {"label": label, "from": pa.trial.trial_id, "to": pb.trial.trial_id, **_summary(sims),
                 "seed_baseline": "seed" in a_name, "same_seed": pa.trial.seed == pb.trial.seed}
            )  # fmt: skip
    return hooks, raw


def plot_geometry(raw: dict[str, Any], out: Path) -> Path:
    """Rows: hooks. Left: within-SAE nearest-neighbour cosine similarity per mode (grey dotted: the
    initial decoder of each seed); right: each
    cross-SAE direction (solid: a mode to local, dashed: local to it, grey: seed baseline)."""
    import numpy as np
    from matplotlib.figure import Figure

    colours = {"local": "C0", "e2e": "C1", "e2e+ds": "C2"}
    fig = Figure(figsize=(11, 3.2 * len(raw)), layout="constrained")
    axes = fig.subplots(len(raw), 2, squeeze=False)
    bins = np.linspace(-0.2, 1.0, 49)
    for row, (hook, r) in zip(axes, raw.items(), strict=True):
        for mode, v in r["within"].items():
            if v is not None:
                row[0].hist(
                    v.numpy(), bins=bins, histtype="step", lw=1.5, color=colours.get(mode), label=mode, density=True
                )
        for seed, v in r["init"].items():
            row[0].hist(v.numpy(), bins=bins, histtype="step", lw=1, color="grey", ls=":", density=True,
                        label=f"initial decoder (seed {seed})")  # fmt: skip
        row[0].set_title(f"{hook}: within each SAE (max cos sim to another element)", fontsize=9)
        for label, v in r["cross"].items():
            src, dst = (s.strip() for s in label.split("->"))
            seed = "seed" in label
            mode = dst if src == "local" else src
            style = dict(
                color="grey" if seed else colours.get(mode),
                ls="--" if src == "local" or (seed and label.endswith(src)) else "-",
            )
            row[1].hist(v.numpy(), bins=bins, histtype="step", lw=1.5, label=label, density=True, **style)
        row[1].set_title(f"{hook}: across SAEs (max cos sim to the other SAE)", fontsize=9)
        for ax in row:
            ax.set_xlabel("cosine similarity")
            ax.set_ylabel("density of elements")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    png = out / GEOMETRY_PNG
    fig.savefig(png, dpi=90)
    return png


def plot_density(stats, title: str, png: Path) -> None:
    """Histogram of log10 firing frequency of the alive elements; dead ones counted in the title."""
    import numpy as np
    from matplotlib.figure import Figure

    density = stats.density.numpy()
    alive = density[density > 0]
    fig = Figure(figsize=(5.2, 2.8), layout="constrained")
    ax = fig.subplots()
    if len(alive):
        ax.hist(np.log10(alive), bins=40, color="C0")
    ax.axvline(math.log10(0.1), color="grey", ls=":", lw=1)
    ax.set_xlabel("log10 firing frequency (fraction of eval tokens)")
    ax.set_ylabel("elements")
    ax.set_title(f"{title}\n{stats.n_dead} dead, {stats.n_dense} dense (> 10%), {len(alive)} alive", fontsize=8)
    fig.savefig(png, dpi=90)


def write_analysis(exp_dir: Path, out: Path, results: list) -> Path:
    from sweeps.analysis.browser import write_html

    hooks, raw = geometry(results)
    plot_geometry(raw, out)
    saes = []
    for p, tr, _ctx, res in results:
        t = p.trial
        plot_density(res.stats, f"{t.trial_id} ({t.mode}, {t.hook})", out / f"density_{t.trial_id}.png")
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
    md = [f"# Inside the dictionaries: {doc['sweep']}", "", _sae_table(saes), "", "## Decoder geometry", ""]
    md += geometry_markdown(doc)
    md += ["Feature browser: [index.html](index.html). Definitions: docs/analysis.md in the repository.", ""]
    (out / "analysis.md").write_text("\n".join(md))
    return write_html(out, doc, results)


def _sae_table(saes: list[dict[str, Any]]) -> str:
    rows = [
        "| trial | role | hook | mode | L0 (eval) | CE-loss increase | dead | dense | norm ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in saes:
        ce = s["trial_metrics"]["ce_loss_increase"]
        rows.append(
            f"| {s['trial_id']} | {s['role']} | {s['hook']} | {s['mode']} | {s['l0']:.1f} | "
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
