"""What a grid would have cost: the smallest log-spaced coefficient grid that meets a target search's
targets, sized with hindsight from the search's own measured coefficient-to-metric curves.

A grid sweep crosses one coefficient list per mode with the other axes (layers, ratios, seeds), so
the grid counted here is one list ``c0 * r**i`` (``i < n``) per mode that, at every curve of that mode,
puts some coefficient within tolerance of every target. A curve's shape is the piecewise-linear
interpolation of log(metric) against log(coeff) through its finished live trials (a dead trial or a
CE increase <= 0 has no log); a grid coefficient outside their range tells nothing and meets no target
(no extrapolation). This is the best
grid a user could have picked knowing the curves in advance, so it flatters the grid: a user who
guesses the scale needs more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The grid's ratio r is searched over log(r) in (0, MAX_LOG_RATIO] and its start over the measured range,
# both on a fine lattice; finer lattices change no count in the cases tested.
MAX_LOG_RATIO = 3.0
LOG_STEP = 0.005


@dataclass(frozen=True)
class GridCost:
    mode: str
    n_coeffs: int | None  # the grid's length per mode; None: no grid within MAX_COEFFS meets every target
    n_curves: int  # curves of this mode (each grid coefficient is one trial per curve)
    coeffs: tuple[float, ...] = ()

    @property
    def n_trials(self) -> int | None:
        return None if self.n_coeffs is None else self.n_coeffs * self.n_curves


Curve = Sequence[tuple[float, float]]  # finished (coeff, metric value) points of one curve


def _live(curve: Curve) -> list[tuple[float, float]]:
    """(log coeff, log value) of the points a curve can be drawn through, sorted by coefficient: a dead
    trial (L0 0, or the target search's encoding of a degenerate one: 0 or inf) or a CE increase
    <= 0 has no log and says only that the curve left the measurable range there."""
    return sorted((math.log(c), math.log(v)) for c, v in curve if c > 0 and 0 < v < math.inf)


def _interp(pts: list[tuple[float, float]], log_c: np.ndarray) -> np.ndarray:
    """log(metric) at log(coeff) ``log_c`` on the live points ``pts``; NaN outside their range."""
    xs = np.array([p[0] for p in pts])
    ys = np.array([p[1] for p in pts])
    out = np.interp(log_c, xs, ys)
    out[(log_c < xs[0]) | (log_c > xs[-1])] = np.nan
    return out


def smallest_grid(curves: list[Curve], targets: Sequence[float], tolerance: float, max_coeffs: int = 16):
    """(n, coeffs) of the shortest log-spaced grid meeting every target on every curve, or (None, ()):
    also when a curve has fewer than two live coefficients (nothing to interpolate between)."""
    live = [_live(c) for c in curves]
    if not curves or any(len({x for x, _ in pts}) < 2 for pts in live):
        return None, ()
    lo = min(x for pts in live for x, _ in pts)
    hi = max(x for pts in live for x, _ in pts)
    log_t = np.log(np.asarray(targets, dtype=float))
    for pts in live:  # a target no coefficient in the measured range reaches: no grid can meet it
        reach = _interp(pts, np.arange(lo, hi + LOG_STEP, LOG_STEP))
        if not (np.abs(reach[:, None] - log_t[None, :]) <= tolerance).any(axis=0).all():
            return None, ()
    starts = np.arange(lo, hi + LOG_STEP, LOG_STEP)
    for n in range(1, max_coeffs + 1):
        ratios = [0.0] if n == 1 else np.arange(LOG_STEP, MAX_LOG_RATIO + LOG_STEP, LOG_STEP)
        for log_r in ratios:
            grid = starts[:, None] + log_r * np.arange(n)[None, :]  # (start, i)
            ok = np.ones(len(starts), dtype=bool)
            for pts in live:
                values = _interp(pts, grid.ravel()).reshape(grid.shape)  # (start, i)
                near = np.abs(values[:, :, None] - log_t[None, None, :]) <= tolerance  # NaN compares False
                ok &= near.any(axis=1).all(axis=1)
                if not ok.any():
                    break
            if ok.any():
                first = int(np.argmax(ok))
                return n, tuple(float(math.exp(x)) for x in grid[first])
    return None, ()


def grid_costs(points: dict[str, dict[str, Curve]], targets: Sequence[float], tolerance: float) -> list[GridCost]:
    """Per mode (``points[mode][curve] = [(coeff, value), ...]``), the smallest grid meeting every target."""
    out = []
    for mode, curves in points.items():
        n, coeffs = smallest_grid(list(curves.values()), targets, tolerance)
        out.append(GridCost(mode=mode, n_coeffs=n, n_curves=len(curves), coeffs=coeffs))
    return out
