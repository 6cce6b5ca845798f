"""When a finished trial's SAE is degenerate: one rule, shared by the report (which keeps such trials
off its frontiers) and the target search (to which they are degenerate: no level a frontier can read).
Pure and import-free, so planning and reporting both use it without importing each other."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# A trial is degenerate (no better than zero ablation, or no active element) when its CE-loss score
# ((CE zero-ablated - CE spliced) / (CE zero-ablated - CE original)) is below this, or its L0 below 1.
# Such SAEs (e.g. local SAEs at the embedding with coefficients >= 1) would put a "matched" level
# where every mode is as bad as deleting the activation: the report keeps them off the frontiers and
# the target search never counts them toward a target (sweeps.planning.curve_search).
DEGENERATE_CE_SCORE = 0.1


def degenerate_reason(metrics: Mapping[str, Any]) -> str | None:
    """Why a finished trial's SAE (its final ``metrics``) is no use on a frontier, or None."""
    score, l0 = _finite(metrics.get("ce_loss_score")), _finite(metrics.get("l0"))
    if score is not None and score < DEGENERATE_CE_SCORE:
        return f"CE-loss score {score:.3g} < {DEGENERATE_CE_SCORE} (barely better than zero ablation)"
    if l0 is not None and l0 < 1:
        return f"L0 {l0:.3g} < 1 (almost no active dictionary element)"
    return None


def _finite(v: Any) -> float | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None
