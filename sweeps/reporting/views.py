"""What report.md, the figures and the architecture comparison all read off pareto.json's document: its
metric names, a hook's frontier sets (one per architecture), the levels the sweep asked for, one colour
per series and the number format. One place, so every figure and table says the same thing the same way.
"""

from __future__ import annotations

import math
from typing import Any

from e2e_sae.modes import MODES
from sweeps.frontier import Y_METRIC

X_METRICS = ("l0", "alive_dict_elements")  # lower is better on both, as on y
LOG_X = {"l0": True, "alive_dict_elements": False}  # interpolation space = the plot's x axis


def hook_views(h: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """A hook's frontier sets: ``[(None, h)]`` in a sweep of one architecture, else one
    ``(architecture, entry)`` per architecture (each with the hook's ``ce_loss_original``)."""
    if "architectures" not in h:
        return [(None, h)]
    return [
        (a, {**e, "layer": h["layer"], "ce_loss_original": h["ce_loss_original"]})
        for a, e in h["architectures"].items()
    ]


def series_label(mode: str, architecture: str | None) -> str:
    """``e2e`` in a sweep of one architecture, ``e2e batchtopk`` beside others."""
    return mode if architecture is None else f"{mode} {architecture}"


def requested_levels(meta: dict[str, Any]) -> list[float]:
    """The CE-loss increases the sweep asked to compare at: ``report.match_at`` and a target search's
    CE-loss targets, sorted, each once."""
    return sorted({float(y) for y in [*meta.get("match_at", []), *meta.get("search_targets", {}).get(Y_METRIC, [])]})


def series_colours(doc: dict[str, Any]) -> dict[str, str]:
    """One colour per series in every figure of a report: the paper's modes fixed (local C0 blue, e2e C1
    orange, e2e+ds C2 green), any other series (a fine-tune's ``local -> e2e, 5%``) the next colours in
    the order they first appear over the hooks."""
    colours: dict[str, str] = {m: f"C{i}" for i, m in enumerate(MODES)}
    for h in doc.get("hooks", {}).values():
        for _, view in hook_views(h):
            for mode in view.get("modes", {}):
                colours.setdefault(mode, f"C{len(colours) % 10}")
    return colours


def fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float) and v.is_integer() and abs(v) >= 10:
        return f"{int(v):,}" if abs(v) >= 10_000 else str(int(v))
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def settings_line(doc: dict[str, Any]) -> str:
    def join(vals: list[Any]) -> str:
        return " / ".join(f"{v:,}" for v in vals) if vals else "unknown"

    return (
        f"model {doc['model'] or 'unknown'}, {join(doc['eval_tokens'])} eval tokens, "
        f"context length (n_ctx) {join(doc['n_ctx'])}"
    )
