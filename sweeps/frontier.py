"""Pareto frontiers and the matched comparison: pure functions, no files, no plotting. Beside the
subpackages, not in reporting: the report, the target search and fine-tune stages (planning) and
``sweeps analyse`` all stand on it, and none of them should import another to get it.

Both objectives are lower-is-better: x is a sparsity cost (``l0`` or ``alive_dict_elements``) and
y is ``ce_loss_increase``. A point is dominated when another point is no worse on both and differs
on at least one; the frontier is what is left.

The matched comparison (the paper's Table 1, generalised) reads each mode's frontier at one common
CE-loss increase: the lowest level that every frontier reaches (see :func:`matched_target`), and
reads the x a frontier needs there by interpolating between the two frontier points around it
(:func:`interpolate_at`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sweeps.degenerate import DEGENERATE_CE_SCORE as DEGENERATE_CE_SCORE  # the report's rule, shared
from sweeps.degenerate import degenerate_reason as degenerate_reason

Y_METRIC = "ce_loss_increase"  # every frontier's y


@dataclass(frozen=True)
class FrontPoint:
    x: float
    y: float
    payload: Any = None


@dataclass(frozen=True)
class Interpolated:
    """The x a frontier needs at ``y``. ``lower_x`` / ``higher_x``: the frontier points on either
    side (the same point when ``y`` hits one exactly). ``clipped``: ``y`` lay above the whole
    frontier, so ``x`` is the sparsest point's x, an upper bound on what that level needs."""

    x: float
    y: float
    lower_x: FrontPoint
    higher_x: FrontPoint
    clipped: bool = False
    log_x: bool = True


def point_label(payload: Any, default: str) -> str:
    """A name for a point in messages: a string payload, or its ``trial_id`` attribute or key."""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, Mapping) and "trial_id" in payload:
        return str(payload["trial_id"])
    if hasattr(payload, "trial_id"):
        return str(payload.trial_id)
    return default


def _as_points(points: Iterable[Any] | np.ndarray) -> list[FrontPoint]:
    """(x, y) or (x, y, payload) tuples, or an array of shape [n, 2], as FrontPoints."""
    if isinstance(points, np.ndarray):
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"points array must have shape [n, 2], got {points.shape}")
        return [FrontPoint(float(x), float(y), None) for x, y in points]
    out = []
    for p in points:
        if isinstance(p, FrontPoint):
            out.append(p)
        elif len(p) in (2, 3):
            out.append(FrontPoint(float(p[0]), float(p[1]), p[2] if len(p) == 3 else None))
        else:
            raise ValueError(f"each point must be (x, y) or (x, y, payload), got {p!r}")
    return out


def pareto_front(points: Iterable[Any] | np.ndarray) -> list[FrontPoint]:
    """The non-dominated points, lower-is-better on x and y, sorted by x ascending (y descending).

    Points whose x or y is NaN or infinite are dropped with a warning naming them. Of several
    points at the identical (x, y), the one with the smallest label (the trial id when the payload
    has one, else the input index) is kept, so the result does not depend on input order.
    """
    finite = []
    for i, p in enumerate(_as_points(points)):
        if math.isfinite(p.x) and math.isfinite(p.y):
            finite.append((p.x, p.y, point_label(p.payload, default=f"{i:012d}"), p))
        else:
            name = point_label(p.payload, default=f"point {i}")
            warnings.warn(f"{name}: dropped from the frontier, x={p.x} y={p.y} is not finite")
    finite.sort(key=lambda t: t[:3])
    front: list[FrontPoint] = []
    for _x, y, _, p in finite:  # x ascending: keep a point only if it beats every y to its left
        if not front or y < front[-1].y:
            front.append(p)
    return front


def interpolate_at(front: Sequence[FrontPoint], y_target: float, log_x: bool = True) -> Interpolated:
    """The x the frontier needs to reach CE-loss increase ``y_target``.

    ``front`` as returned by :func:`pareto_front` (x ascending, y strictly descending). Between
    the two frontier points around ``y_target``, x is interpolated linearly in (y, log x) when
    ``log_x`` (plain x when either x is <= 0), else linearly in (y, x): straight segments on a
    log-x or linear-x plot. Above the frontier's highest y the sparsest point is returned with
    ``clipped=True``; below its lowest y the frontier cannot reach the level: ValueError.
    """
    if not front:
        raise ValueError("interpolate_at needs a non-empty frontier")
    ys = [p.y for p in front]
    if y_target < ys[-1]:
        raise ValueError(f"the frontier never reaches ce_loss_increase {y_target} (its lowest is {ys[-1]})")
    if y_target >= ys[0]:
        clipped = y_target > ys[0]
        return Interpolated(front[0].x, y_target, front[0], front[0], clipped=clipped, log_x=log_x)
    # ys strictly descend: find i with ys[i] > y_target >= ys[i + 1]
    i = next(k for k in range(len(front) - 1) if ys[k] > y_target >= ys[k + 1])
    a, b = front[i], front[i + 1]
    if y_target == b.y:
        return Interpolated(b.x, y_target, b, b, log_x=log_x)
    t = (y_target - a.y) / (b.y - a.y)
    if log_x and a.x > 0 and b.x > 0:
        x = math.exp(math.log(a.x) + t * (math.log(b.x) - math.log(a.x)))
    else:
        x = a.x + t * (b.x - a.x)
    return Interpolated(x, y_target, a, b, log_x=log_x)


def ce_at_l0(front: list[FrontPoint], l0: float) -> float | None:
    """The frontier's CE-loss increase at ``l0``, None outside its L0 range: :func:`interpolate_at` the other
    way round (the same segments, linear in (log L0, CE-loss increase))."""
    pts = sorted((p.x, p.y) for p in front if p.x > 0)
    if not pts or not pts[0][0] <= l0 <= pts[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= l0 <= x1:
            w = 0.0 if x1 == x0 else (math.log(l0) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + w * (y1 - y0)
    return pts[0][1]  # a frontier of one point, read at its own L0


def read_inside(front: Sequence[FrontPoint], level: float) -> float | None:
    """The frontier's L0 (log-x :func:`interpolate_at`) at CE-loss increase ``level`` when its CE range
    covers the level, else None: no extrapolation, no clipping."""
    if not front or not (front[-1].y <= level <= front[0].y):
        return None
    return interpolate_at(front, level, log_x=True).x


def matched_target(fronts: Iterable[Sequence[FrontPoint]]) -> float | None:
    """The lowest CE-loss increase every (non-empty) frontier reaches: the largest of the
    frontiers' minimal y. None when there is no non-empty frontier."""
    lows = [front[-1].y for front in fronts if front]
    return max(lows) if lows else None


def overlap_levels(fronts: Sequence[Sequence[FrontPoint]], n: int) -> list[float]:
    """``n`` y levels evenly spread over the range every frontier spans (its lowest to its highest
    y), ends included; [] when the ranges do not overlap. Each level is clamped into the range:
    ``lo + (hi - lo) * i / (n - 1)`` can land an ulp above ``hi``, where a frontier has no reading."""
    if not fronts or any(not f for f in fronts):
        return []
    lo, hi = max(f[-1].y for f in fronts), min(f[0].y for f in fronts)
    if lo > hi:
        return []
    if lo == hi or n == 1:
        return [lo]
    return [min(hi, max(lo, lo + (hi - lo) * i / (n - 1))) for i in range(n)]


def ratio_bound(numerator_clipped: bool, denominator_clipped: bool) -> str | None:
    """What a ratio of two frontier readings is when either reading is clipped (an upper bound on
    the x needed): None (both exact: an estimate), ``"upper"`` (the true ratio is at most this),
    ``"lower"`` (at least this: the denominator may be smaller) or ``"neither"`` (both clipped:
    the ratio of two upper bounds bounds nothing)."""
    if numerator_clipped and denominator_clipped:
        return "neither"
    if numerator_clipped:
        return "upper"
    return "lower" if denominator_clipped else None


def drawn_front(trials: Iterable[Any], x_metric: str = "l0") -> list[FrontPoint]:
    """The frontier the report draws of ``trials`` (each with a ``metrics`` mapping, its final row): the
    (``x_metric``, CE-loss increase) :func:`pareto_front` of those that are not degenerate
    (:func:`degenerate_reason`), each point's payload its trial. The report's frontiers and a sweep's
    ``parents: frontier`` fine-tune stages (sweeps.planning.finetune_stage) are both this."""
    return pareto_front(
        [
            (_number(t.metrics.get(x_metric)), _number(t.metrics.get(Y_METRIC)), t)
            for t in trials
            if degenerate_reason(t.metrics) is None
        ]
    )


def _number(v: Any) -> float:
    """A metric as a float; NaN (dropped from a frontier, with a warning) where it is missing or no number."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
