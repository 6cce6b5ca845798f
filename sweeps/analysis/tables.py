"""The geometry tables of an analysis (``analysis.json`` -> markdown), and the paper's figures to set
beside ours. Pure: no torch, no model; ``sweeps report`` uses it to show an existing analysis.

The paper's GPT-2-small figures (Braun et al. 2024, Sections 3.3-3.4), quoted in docs/analysis.md.
"""

from __future__ import annotations

import math
from typing import Any

ANALYSIS_JSON = "analysis.json"
GEOMETRY_PNG = "geometry.png"
# An element is shared with another SAE when its best match there has decoder cosine similarity above
# this (Paulo & Belrose, arXiv 2501.16615, count latents shared between two seeds' SAEs this way).
MATCH_THRESHOLD = 0.7
# Within-SAE nearest-neighbour cosine similarity: local's is higher than this mode's by ...
PAPER_WITHIN_LOCAL_MINUS = {"e2e": 0.166, "e2e+ds": 0.04}
# Reconstruction norm ratio ||a_hat|| / ||a|| at GPT-2 layers 2, 6, 10.
PAPER_NORM_RATIO = {
    "local": {2: 0.98, 6: 0.92, 10: 0.91},
    "e2e": {2: 0.67, 6: 0.31, 10: 0.15},
    "e2e+ds": {2: 0.74, 6: 0.56, 10: 0.32},
}
SAME_SEED_LINE = (
    "SAEs of the same seed start from the same decoder (the run's seeded initialisation), so their "
    "elements are paired from the start: read cross-SAE similarities beside each SAE's similarity to "
    "its own initial directions (the last column above) and, where there is one, the seed baseline."
)
NO_SEED_LINE = (
    "No second seed of any analysed mode in this sweep, so there is no seed baseline for the "
    "cross-SAE similarities: add `seed: [0, 1]` to the sweep's axes."
)


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _paper_norm(mode: str) -> str:
    p = PAPER_NORM_RATIO.get(mode)
    return " / ".join(f"{v:.2f}" for v in p.values()) if p else "–"


def geometry_markdown(doc: dict[str, Any], img_prefix: str = "") -> list[str]:
    """Markdown lines: the geometry plot, the within-SAE, cross-SAE and norm-ratio tables with the
    paper's figures beside ours, and one summary line per hook (numbers only)."""
    lines = [f"![decoder geometry]({img_prefix}{GEOMETRY_PNG})", ""]
    lines += [
        "**Within each SAE**: each alive element's largest cosine similarity to another element of the "
        "same dictionary (mean and median over elements). Paper (GPT-2): local higher than e2e by "
        f"{PAPER_WITHIN_LOCAL_MINUS['e2e']} and than e2e+ds by {PAPER_WITHIN_LOCAL_MINUS['e2e+ds']}.",
        "",
        "| hook | mode | trial | alive / elements | mean | median | local minus this mode | paper "
        "| mean at initialisation | cos sim to own initial direction |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for hook, h in doc["hooks"].items():
        for mode, w in h["within"].items():
            diff = h["local_minus"].get(mode)
            paper = PAPER_WITHIN_LOCAL_MINUS.get(mode)
            lines.append(
                f"| {hook} | {mode} | {w['trial_id']} | {w['n_alive']} / {w['n_dict']} | {_f(w['mean'])} | "
                f"{_f(w['median'])} | {_f(diff)} | {_f(paper)} | {_f(w.get('init_mean'))} | "
                f"{_f(w.get('to_init_mean'))} |"
            )
    lines += ["", *seed_lines(doc)]
    lines += [
        "",
        "**Across SAEs at the same hook**: for each alive element of the first SAE, its largest cosine "
        "similarity to any alive element of the second (mean, median, the fraction above 0.9, and the share "
        f"of elements shared: best match above {MATCH_THRESHOLD}, as Paulo & Belrose count latents shared "
        "between seeds).",
        "",
        f"| hook | from -> to | mean | median | > 0.9 | shared (> {MATCH_THRESHOLD}) | "
        "same seed (same initial decoder) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for hook, h in doc["hooks"].items():
        for c in h["cross"]:
            lines.append(
                f"| {hook} | {c['label']} | {_f(c['mean'])} | {_f(c['median'])} | {_f(c['frac_above_0.9'])} | "
                f"{_f(c.get('shared'))} | {'yes' if c.get('same_seed') else 'no'} |"
            )
    lines += ["", SAME_SEED_LINE]
    if not doc.get("has_seed_baseline"):
        lines += ["", NO_SEED_LINE]
    modes = [m for m in ("local", "e2e", "e2e+ds") if any(m in h["norm_ratio"] for h in doc["hooks"].values())]
    lines += [
        "",
        "**Reconstruction norm ratio** ||a_hat|| / ||a||, mean over eval tokens at positions > 0. "
        "Paper (GPT-2, layers 2 / 6 / 10): " + "; ".join(f"{m} {_paper_norm(m)}" for m in PAPER_NORM_RATIO) + ".",
        "",
        "| hook | " + " | ".join(modes) + " |",
        "| --- " * (1 + len(modes)) + "|",
    ]
    for hook, h in doc["hooks"].items():
        lines.append(f"| {hook} | " + " | ".join(_f(h["norm_ratio"].get(m)) for m in modes) + " |")
    lines.append("")
    lines += [f"- {s}" for s in summary_lines(doc)]
    return lines + [""]


def seed_lines(doc: dict[str, Any]) -> list[str]:
    """Per hook, the seed its modes are compared at: one seed for all (``sweeps analyse`` picks every
    mode's frontier SAE at the same seed), or, with named trials of several seeds, each mode's."""
    out = []
    for hook, h in doc["hooks"].items():
        seeds = h.get("seeds") or {}
        if len(seeds) < 2:
            continue
        if len(set(seeds.values())) == 1:
            seed = next(iter(seeds.values()))
            out.append(
                f"{hook}: the modes are compared at seed {seed} (every mode's SAE is seed {seed}'s, so "
                "all start from the same initial decoder); the seed baseline is another seed of one mode."
            )
        else:
            each = ", ".join(f"{m} seed {s}" for m, s in seeds.items())
            out.append(
                f"{hook}: the modes' SAEs are of different seeds ({each}): a cross-mode row between two "
                "seeds mixes the seed's effect with the mode's."
            )
    return out


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """One sentence per hook: our differences beside the paper's, and the norm ratios."""
    out = []
    for hook, h in doc["hooks"].items():
        parts = [
            f"local's mean nearest-neighbour cosine similarity minus {m}'s: {_f(d)} "
            f"(paper {_f(PAPER_WITHIN_LOCAL_MINUS[m])})"
            for m, d in h["local_minus"].items()
            if m in PAPER_WITHIN_LOCAL_MINUS
        ]
        if h["norm_ratio"]:
            parts.append("norm ratio " + ", ".join(f"{m} {_f(v)}" for m, v in h["norm_ratio"].items()))
        parts += _shared_parts(h["cross"])
        if parts:
            out.append(f"{hook}: " + "; ".join(parts) + ".")
    return out


def _shared_parts(cross: list[dict[str, Any]]) -> list[str]:
    """The shares of shared elements: same mode across seeds (the seed baseline), against across modes
    (at one seed: sharing an initial decoder; or at different seeds)."""
    rows = [c for c in cross if c.get("shared") is not None]
    groups = [
        ("same mode across seeds", [c for c in rows if c.get("seed_baseline")]),
        (
            "across modes at one seed (sharing an initial decoder)",
            [c for c in rows if not c.get("seed_baseline") and c.get("same_seed")],
        ),
        ("across modes and seeds", [c for c in rows if not c.get("seed_baseline") and not c.get("same_seed")]),
    ]
    said = [f"{name} " + ", ".join(f"{c['label']} {_f(c['shared'])}" for c in cs) for name, cs in groups if cs]
    if not rows or not said or not groups[0][1]:
        return []
    return [f"elements shared (best match > {MATCH_THRESHOLD}): " + "; ".join(said)]
