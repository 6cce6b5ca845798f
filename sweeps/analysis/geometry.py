"""The decoder geometry across the analysed SAEs (within one SAE, across SAEs, norm ratios) and its
plots: numbers from :mod:`e2e_sae.dictionary`'s passes, drawn with matplotlib."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from e2e_sae.modes import in_mode_order
from sweeps.analysis.tables import GEOMETRY_PNG, MATCH_THRESHOLD


def _summary(values) -> dict[str, Any]:
    v = values.double()
    return {
        "mean": float(v.mean()),
        "median": float(v.median()),
        "frac_above_0.9": float((v > 0.9).double().mean()),
        "shared": float((v > MATCH_THRESHOLD).double().mean()),
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
    """(analysis.json's ``hooks`` part, the raw per-element similarities for the plot). SAEs of different
    architectures are compared within their architecture: with several, the key is ``<hook> [<arch>]``."""
    from e2e_sae.dictionary import max_cos_sim_across, max_cos_sim_within

    hooks: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    several = len({r[0].trial.architecture for r in results}) > 1
    ordered = sorted(results, key=lambda r: (r[0].trial.layer or 0, str(r[0].trial.hook)))
    for p, _tr, _ctx, res in ordered:
        hook = f"{p.trial.hook} [{p.trial.architecture}]" if several else str(p.trial.hook)
        h = hooks.setdefault(
            hook, {"layer": p.trial.layer, "within": {}, "cross": [], "norm_ratio": {}, "local_minus": {}}
        )
        r = raw.setdefault(hook, {"within": {}, "cross": {}, "primary": {}, "baseline": {}, "init": {}})
        alive = res.stats.fire_counts > 0
        dirs = res.directions[:, alive]
        mode = str(p.trial.series)
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
        h["seeds"] = {m: r["primary"][m][0].trial.seed for m in modes}  # the seed each mode is compared at
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
    """Draw :func:`geometry_figure` to ``out/geometry.png``."""
    png = out / GEOMETRY_PNG
    geometry_figure(raw).savefig(png, dpi=90)
    return png


def geometry_figure(raw: dict[str, Any]):
    """Rows: hooks. Left: within-SAE nearest-neighbour cosine similarity per mode (grey dotted: the
    initial decoder of each seed); right: each cross-SAE direction (solid: a mode to local, dashed:
    local to it, grey: seed baseline). Each panel's legend sits below it, outside the axes: with three
    modes and their seed baselines the right panel has ten entries, which inside would cover the
    histograms."""
    import numpy as np
    from matplotlib.figure import Figure

    colours = {"local": "C0", "e2e": "C1", "e2e+ds": "C2"}
    fig = Figure(figsize=(11, 4.6 * len(raw)), layout="constrained")
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
                ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, frameon=False)
    return fig


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
