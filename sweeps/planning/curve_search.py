"""Target search: the sweep places sparsity coefficients itself until each curve's trials land on the
targets the user names (L0 or CE-loss increase), instead of a grid whose scale must be guessed.

Why this shape: along one curve (the trials of one mode, layer, dictionary ratio and seed) L0 falls and CE-loss increase
rises monotonically with the sparsity coefficient, close to a straight line in log-log. So for each
unmet target the search interpolates (in log-log) between the two finished trials that bracket it, and
where none does, steps out from the last trial in the target's direction along the fitted slope
(bounded, and with a prior slope until two trials exist). Noise and small wiggles cannot make it loop:
a target whose bracket has shrunk below :data:`MIN_BRACKET` is settled by its closest trial, no
coefficient is proposed twice, and every curve has a budget.

What a real sweep meets at the edges, and what the search makes of it:

- **Met** means a live trial within tolerance *and* live trials on both sides of the target (or one on
  it): the report reads frontiers only between trials (docs/report.md), so a met level is one the
  report can read. Stepping out toward a target therefore aims past it by half the tolerance.
- **Degenerate trials** (:func:`sweeps.degenerate.degenerate_reason`, the report's rule: L0 < 1 or CE-loss
  score < 0.1, barely better than zero ablation) and values <= 0 are information, not noise: they lie
  beyond every target (:func:`search_value`). Degeneration sets in with sparsity pressure, so a target
  past the metric a degenerate trial still reached (L0 126 at a degenerate trial, target 100) lies
  where every SAE is degenerate: it is out of reach at once, with the fix (:data:`DEGENERATE_FIX`),
  instead of spending the budget there.
  A bracket with such an end is narrowed by log-log interpolation toward the L0 the degenerate trial
  still reached where that is >= 1 (a trial there settles the target: live, met; degenerate, out of
  reach), else (an L0 "0" toward which interpolation would crawl next to the live end) by a step along
  the live trials' slope when that lands inside it, else by bisection in log coefficient; a degenerate
  start steps 10x away. A step out that would land within :data:`WAIT` of a running trial waits for
  that trial's answer.
- **The dictionary** bounds L0 and k: an L0 target at or above ``n_dict`` is out of reach, and k is
  proposed within [1, n_dict) (a target past what k = n_dict - 1 reaches is out of reach).
- **A plateau** (the metric moving less than :data:`FLAT_SLOPE` per unit log coefficient over a decade
  at the end of the measured range toward a target) puts the target out of reach: stepping on would
  spend the budget on the floor. Such a target, and one beyond where the SAE dies, is reported with the
  reason and what to change (:meth:`CurveSearch.standing`). Bracketed targets are proposed first.
- **A floor** that the plateau rule misses because the metric still creeps (e2e at blocks.0: L0 80.9 ->
  71.3 over coefficients 604-3969) puts a target out of reach when the last >= 4x of the coefficient
  toward it moved the metric by < 15% after it had moved more, and at that rate the trials left in the
  budget, 10x apart, would not reach it (:meth:`CurveSearch._floor`); so does a metric that turns back
  away from the target toward less sparsity pressure (e2e's CE-loss increase at blocks.0 rises from 0.41
  to 0.45 as the coefficient falls 10x: its limit without pressure), which frees the budget for the
  other targets.
- **Errored trials** carry no information and their coefficients are not proposed again, except that a
  curve with nothing finished retries its start (a new attempt, within its budget); a trial that errored
  and is re-run (``sweeps resume``) is recorded when it ends.

:class:`CurveSearch` is the pure state machine (tested without Ray); :mod:`sweeps.running.searcher` adapts
it to Ray Tune. ``status`` rebuilds it from the trials on disk (:mod:`sweeps.planning.target_search`), and every
verdict is a function of the recorded trials, so status says what the search saw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sweeps.degenerate import degenerate_reason

# The metrics a search can target, with the sign of d log(metric) / d log(coeff) and a prior slope.
SEARCH_METRICS = {"l0": -1.0, "ce_loss_increase": 1.0}
MAX_STEP = math.log(10.0)  # at most 10x the coefficient away from the nearest trial per proposal
SLOPE_RANGE = (0.1, 10.0)  # |fitted slope| is clamped to this range (a noisy fit must not jump far)
MIN_BRACKET = math.log(1.02)  # a bracket narrower than 2% in the coefficient settles its target
DUPLICATE = math.log(1.01)  # coefficients within 1% of a tried one count as the same
WAIT = math.log(1.25)  # a step out this close to a running trial waits for it (its answer serves both)
FLAT_SPAN = math.log(10.0)  # a plateau is judged over at least a decade of the coefficient ...
FLAT_SLOPE = 0.05  # ... across which log(metric) moves by less than this per unit log(coeff) (10x: < 12%)
FLOOR_SPAN = math.log(4.0)  # a floor is judged over the last >= 4x of the coefficient toward the target ...
FLOOR_MOVE = math.log(1.15)  # ... across which the metric moved by less than 15%
SLOW_SLOPE = 0.2  # a step out from trials moving less than this may be heading for a floor (said if budget runs out)
TRAINING_FIX = "train longer (overrides.train.n_samples) or with a higher lr (overrides.train.lr)"
# What lets an SAE reach a sparsity where it now degenerates: more training, to learn a reconstruction at
# that sparsity. Measured at the built-in model's blocks.0 (local, L0 target 100, docs/sweeps.md): at 1000
# samples L0 stops near 125 where the SAE degenerates, at 4000 the start coefficient alone reaches L0 100
# (CE-loss increase 0.35); sae.input_normalization did not help (L0 stuck at 191 at 1000 samples).
DEGENERATE_FIX = (
    "fix: train longer (overrides.train.n_samples: the SAE needs the samples to learn a reconstruction at that "
    "sparsity), or aim within what live trials reach"
)


@dataclass
class Proposal:
    coeff: float
    target: float | None  # None: not known (a trial read back from disk)
    attempt: int = 1  # > 1: a retry of a start coefficient whose trials errored


@dataclass(frozen=True)
class Standing:
    """Where a target stands. ``state``: ``met``, ``searching`` (a trial for it is running or will be
    proposed), ``settled`` (its bracket shrank below MIN_BRACKET: the closest trial stands), ``out of
    reach`` (a plateau, or the SAE dies before the metric gets there) or ``budget spent``; ``reason``:
    why, and what to change, for anything but met."""

    state: str
    reason: str = ""


@dataclass(frozen=True)
class _Aim:
    """How the search would go after one target. Proposals go by ``rank`` (0 bracketed by live trials,
    1 bracketed by a dead one, 2 stepping out, 3 the start), then ``distance`` (|log value| from the
    live trial it goes from: the nearest target first); aims that share ``probe`` (a dead bracket or a
    dead last trial: one answer serves them all) get one proposal per round."""

    rank: int
    candidates: tuple[float, ...] = ()  # log coefficients, best first
    distance: float = 0.0
    probe: tuple[float, ...] | None = None
    state: str = "searching"  # or "settled" / "out of reach": nothing to propose
    reason: str = ""


def search_value(metric: str, metrics: Mapping[str, Any]) -> float | None:
    """What the search records of a finished trial's final ``metrics``: the target metric, or for a
    degenerate SAE the end beyond every target on the dead side (0 for L0, inf for CE-loss
    increase); None when the metric is missing or not finite (no information)."""
    value = metrics.get(metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    if degenerate_reason(metrics):
        return 0.0 if SEARCH_METRICS[metric] < 0 else math.inf
    return float(value)


@dataclass
class CurveSearch:
    """The coefficient search along one curve toward ``targets`` of ``metric``.

    ``finished``: (coeff, value) of trials that reported final metrics (:func:`search_value`);
    ``failed``: trial id -> proposal of trials that errored or reported no metric (no information);
    ``pending``: trial id -> proposal of trials running."""

    key: str
    metric: str
    targets: list[float]
    tolerance: float  # |log(achieved / target)| that counts as met
    budget: int  # trials this curve may start, errored ones included
    start: float  # the first coefficient (or k)
    # What the search places: ``coeff`` (a sparsity coefficient: relu, jumprelu) or ``k`` (the topk
    # family's active elements per token: an integer, and L0 rises with it where it falls with a
    # coefficient). "coefficient" below means either.
    knob: str = "coeff"
    finished: list[tuple[float, float]] = field(default_factory=list)
    failed: dict[str, Proposal] = field(default_factory=dict)
    pending: dict[str, Proposal] = field(default_factory=dict)
    # (coeff, the metric it still reached or None, why) of each finished degenerate trial (in ``finished``
    # beyond every target): where degeneration set in, for the verdicts
    degenerate: list[tuple[float, float | None, str]] = field(default_factory=list)
    n_dict: int | None = None  # the dictionary's size (bounds L0 and k); None: not known

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle, also a search saved before failed trials kept their ids (a list of coefficients)."""
        state.pop("settled", None)
        state.setdefault("knob", "coeff")  # saved before the search placed k
        state.setdefault("degenerate", [])  # saved before degenerate trials kept their metric
        state.setdefault("n_dict", None)
        if isinstance(state.get("failed"), list):
            state["failed"] = {f"failed{i}": Proposal(c, None) for i, c in enumerate(state["failed"])}
        self.__dict__.update(state)

    # ---- what is known ---------------------------------------------------------------------------

    @property
    def n_started(self) -> int:
        return len(self.finished) + len(self.failed) + len(self.pending)

    def _points(self) -> list[tuple[float, float]]:
        """(log coeff, log value) of the finished trials by coefficient; -inf / inf beyond every target."""
        return sorted((math.log(c), _log(v)) for c, v in self.finished)

    def closest(self, target: float) -> tuple[float, float] | None:
        """The finished live (coeff, value) nearest to ``target`` in log space (of equals, the smallest
        coefficient: the same answer whatever order the trials finished in)."""
        live = [cv for cv in self.finished if math.isfinite(_log(cv[1]))]
        return min(live, key=lambda cv: (abs(_log(cv[1]) - math.log(target)), cv[0])) if live else None

    def is_met(self, target: float) -> bool:
        """A live trial within tolerance, and live trials on both sides of ``target`` (or one on it)."""
        best, t = self.closest(target), math.log(target)
        live = [y for _, y in self._points() if math.isfinite(y)]
        return best is not None and abs(_log(best[1]) - t) <= self.tolerance and min(live) <= t <= max(live)

    def standing(self, target: float) -> Standing:
        """Met, still searched, or why not (the same verdict for the searcher and for ``status``)."""
        if self.is_met(target):
            return Standing("met")
        aim = self._aim(target)
        if aim.state != "searching":
            return Standing(aim.state, aim.reason)
        if any(p.target == target for p in self.pending.values()):
            return Standing("searching", "a trial aimed at it is running")
        if not self.pending and self._untried(aim, taken=[]) is None:
            return Standing(
                "settled", "every coefficient the search would try next was tried; the closest trial stands"
            )
        if self.n_started < self.budget:
            return Standing("searching", "to be proposed")
        if self.pending:
            return Standing("searching", "the curve's last trials are running")
        if not self.finished:
            return Standing("budget spent", f"all {self.n_started} trials errored (see their error.txt)")
        best = self.closest(target)
        near = best is not None and abs(_log(best[1]) - math.log(target)) <= self.tolerance
        why = " (the closest trial is within tolerance, but no live trial lies on its other side)" if near else ""
        if self.failed:  # they spent the budget too: the fix may be theirs, not a bigger budget
            why += f"; {len(self.failed)} of them errored (see their error.txt)"
        return Standing(
            "budget spent",
            f"all {self.budget} trials of the curve's budget started{why}"
            + (f"; {aim.reason}" if aim.reason else "")
            + "; raise search.max_trials_per_curve",
        )

    def open_targets(self) -> list[float]:
        """Targets still searched and not aimed at by a pending trial."""
        aimed = {p.target for p in self.pending.values()}
        return [t for t in self.targets if t not in aimed and self.standing(t).state == "searching"]

    def is_done(self) -> bool:
        """Nothing pending and nothing more to propose (targets met, settled, out of reach, or budget spent)."""
        return not self.pending and not self.proposals()

    # ---- what to try next ------------------------------------------------------------------------

    def proposals(self) -> list[Proposal]:
        """One new coefficient per open target, bracketed targets first, within the budget; never one
        tried or pending already (but for retrying the start while nothing has finished)."""
        out: list[Proposal] = []
        room = self.budget - self.n_started
        probed: set[tuple[float, ...]] = set()
        aims = [(self._aim(t), i, t) for i, t in enumerate(self.open_targets())]
        for aim, _, target in sorted(aims, key=lambda a: (a[0].rank, a[0].distance, a[1])):
            if len(out) >= room or aim.probe in probed or self._answered_by_running(aim):
                continue
            x = self._untried(aim, taken=[math.log(p.coeff) for p in out])
            if x is not None:
                attempt = 1 + sum(_near(x, [math.log(p.coeff)]) for p in self.failed.values())
                out.append(Proposal(self.start if aim.rank == 3 else self._value(x), target, attempt=attempt))
                if aim.probe is not None:
                    probed.add(aim.probe)
        return out

    def _answered_by_running(self, aim: _Aim) -> bool:
        """A step out (rank 2) landing within WAIT of a running trial waits for that trial's answer: it
        was two trials 5% apart, both degenerate, where one would have told."""
        running = [math.log(p.coeff) for p in self.pending.values()]
        return aim.rank == 2 and bool(aim.candidates) and any(abs(aim.candidates[0] - x) < WAIT for x in running)

    def _untried(self, aim: _Aim, taken: list[float]) -> float | None:
        """The first of ``aim``'s candidates not within DUPLICATE of a tried, pending or ``taken``
        coefficient; the start (rank 3) may repeat a coefficient whose trials errored."""
        blocked = [math.log(p.coeff) for p in self.pending.values()] + taken
        if aim.rank != 3:
            blocked += [x for x, _ in self._points()] + [math.log(p.coeff) for p in self.failed.values()]
        placed = (math.log(self._value(x)) for x in aim.candidates)  # k: the integer it rounds to
        return next((x for x in placed if not _near(x, blocked)), None)

    def _sign(self) -> int:
        """The sign of d log(metric) / d log(knob): L0 falls with a coefficient and rises with k."""
        return int(SEARCH_METRICS[self.metric]) * (-1 if self.knob == "k" else 1)

    def _value(self, x: float) -> float:
        """The knob's value at log ``x``: a coefficient as is, k rounded to an integer in [1, n_dict)."""
        if self.knob != "k":
            return math.exp(x)
        return float(min(max(1, round(math.exp(x))), (self.n_dict or math.inf) - 1))

    def _aim(self, target: float) -> _Aim:
        t = math.log(target)
        beyond = self._beyond_dictionary(target) or self._degenerate_before(target)
        if beyond:
            return _Aim(2, state="out of reach", reason=beyond)
        points = self._points()
        if not points:  # nothing known yet: the start (again, if its trials errored)
            return _Aim(3, (math.log(self.start),))
        pairs = [i for i in range(len(points) - 1) if _straddle(points[i][1], points[i + 1][1], t)]
        if pairs:  # the tightest of the neighbouring pairs around the target
            i = min(pairs, key=lambda k: points[k + 1][0] - points[k][0])
            return self._aim_inside(t, points[i], points[i + 1], bends=_bends(points, i))
        return self._aim_beyond(t, points)

    def _reached(self, x: float) -> float | None:
        """What the degenerate trial at log coefficient ``x`` still reached of the metric (None: unknown)."""
        return next((v for c, v, _ in self.degenerate if abs(math.log(c) - x) < 1e-9 and v is not None and v > 0), None)

    def _beyond_dictionary(self, target: float) -> str | None:
        """Why an L0 target is out of reach of the dictionary (L0 counts its active elements), or None."""
        if self.metric != "l0" or self.n_dict is None or target < self.n_dict:
            return None
        return (
            f"l0 counts active elements of the {self.n_dict} in the dictionary, so {target:g} is beyond it; fix: a "
            f"target below {self.n_dict}, or a larger dictionary (axes.dict_size_to_input_ratio)"
        )

    def _degenerate_before(self, target: float) -> str | None:
        """Why ``target`` is out of reach where a degenerate trial had not yet reached it, or was within
        tolerance of it (L0 still above an L0 target, CE-loss increase still below a CE target):
        degeneration sets in with sparsity pressure, and a trial past the target is under more; None where
        no degenerate trial says so. Reported at the degenerate trial under the least pressure (the edge)."""
        up = SEARCH_METRICS[self.metric] > 0  # the metric rises with sparsity pressure (CE) or falls (L0)
        edge = target * math.exp(self.tolerance if up else -self.tolerance)
        short = [(c, v, why) for c, v, why in self.degenerate if v is not None and (v <= edge if up else v >= edge)]
        if not short:
            return None
        c, v, why = min(short, key=lambda d: d[1] if up else -d[1])
        name = "k" if self.knob == "k" else "coefficient"
        start = ""  # from the trials alone (status does not know the start the searcher scaled)
        if self.closest(target) is None:
            start = "; every trial was degenerate: a smaller search.start for this mode (or none: scaled to the layer)"
        return (
            f"the SAE degenerates before {self.metric} reaches the target (within tolerance): at {name} {c:.4g} "
            f"{self.metric} is "
            f"{v:.3g} and the trial is degenerate ({why}); {DEGENERATE_FIX}{start}"
        )

    def _aim_inside(self, t: float, a: tuple[float, float], b: tuple[float, float], bends: bool = False) -> _Aim:
        """A proposal between two trials on either side of log target ``t``: log-log interpolation, or
        the midpoint in log coefficient where the response ``bends`` (a kink such as the edge of a floor
        makes interpolation land next to the same end again and again)."""
        (x0, y0), (x1, y1) = a, b
        if x1 - x0 < MIN_BRACKET or (self.knob == "k" and round(math.exp(x1)) - round(math.exp(x0)) <= 1):
            return self._narrow(a, b)  # no coefficient (no integer k) left between them
        mid = (x0 + x1) / 2
        if math.isfinite(y0) and math.isfinite(y1):
            x = x0 + (t - y0) * (x1 - x0) / (y1 - y0)
            return _Aim(0, (mid,) if bends else (x, mid))  # the midpoint also if interpolation hits a tried one
        if not (math.isfinite(y0) or math.isfinite(y1)):
            return _Aim(1, (mid,), probe=(x0, x1))
        (xl, yl), (xd, y_dead) = (a, b) if math.isfinite(y0) else (b, a)
        # Aiming past the target (toward the degenerate end) by half the tolerance, so that a live trial
        # lands on its other side: where the degenerate trial's own L0 (>= 1) puts it in log-log (a trial
        # there settles the target either way: live, it meets it; degenerate, it is out of reach), else
        # along the live trials' slope if that stays inside; else bisect.
        aim = t + math.copysign(self.tolerance / 2, y_dead)
        reached = self._reached(xd) if self.metric == "l0" else None
        xs = [xl + (aim - yl) * (xd - xl) / (math.log(reached) - yl)] if reached and reached >= 1 else []
        xs.append(xl + (aim - yl) / self._slope())
        return _Aim(
            1,
            tuple(x for x in xs if x0 < x < x1) + (mid,),
            distance=abs(t - yl),
            probe=(x0, x1),
            reason=f"{self.metric} leaves the live range {self._between(a, b)}: the target may lie beyond it",
        )

    def _aim_beyond(self, t: float, points: list[tuple[float, float]]) -> _Aim:
        """A step out past the last trial toward log target ``t`` (every value lies on one side of it)."""
        up = points[0][1] < t  # the metric must rise: for L0 a smaller coefficient, for CE a larger one
        d = self._sign() * (1 if up else -1)  # direction in log coefficient
        xe, ye = max(points, key=lambda p: d * p[0])
        if not math.isfinite(ye):  # the last trial is degenerate: 10x away from it
            return _Aim(2, (xe + d * MAX_STEP,), probe=(xe,))
        if self.knob == "k" and self.n_dict is not None and d > 0 and round(math.exp(xe)) >= self.n_dict - 1:
            return _Aim(
                2,
                state="out of reach",
                reason=f"{self.metric} at the largest k, {self.n_dict - 1} (the dictionary has {self.n_dict} "
                f"elements), is {math.exp(ye):.3g}; fix: a larger dictionary (axes.dict_size_to_input_ratio) or a "
                "target within reach",
            )
        plateau = self._plateau(points, d) or self._floor(t, points, d)
        if plateau:
            return _Aim(2, state="out of reach", reason=plateau)
        aim = t + (self.tolerance if up else -self.tolerance) / 2  # land across the target, within tolerance
        step = max(-MAX_STEP, min(MAX_STEP, (aim - ye) / self._slope()))
        candidates = (xe + step, xe + step * 1.5, xe + step * 0.5)
        return _Aim(2, candidates, distance=abs(t - ye), reason=self._slow(points, d))

    def _slow(self, points: list[tuple[float, float]], d: float) -> str:
        """Where the last two live trials toward the target moved the metric less than SLOW_SLOPE per unit
        log coefficient: that a floor may be near (said where the budget runs out there), else ''."""
        live = sorted((p for p in points if math.isfinite(p[1])), key=lambda p: d * p[0])[-2:]
        if len(live) < 2 or abs(live[1][0] - live[0][0]) < DUPLICATE:  # one coefficient (a retried start): no slope
            return ""
        (x0, y0), (x1, y1) = sorted(live)
        if abs((y1 - y0) / (x1 - x0)) >= SLOW_SLOPE:
            return ""
        return (
            f"{self.metric} moves slowly at the end of the measured range ({math.exp(y0):.3g} to {math.exp(y1):.3g} "
            f"for {'k' if self.knob == 'k' else 'coefficients'} {math.exp(x0):.4g}-{math.exp(x1):.4g}): a floor the "
            f"training sets may be near (fix: {TRAINING_FIX})"
        )

    def _floor(self, t: float, points: list[tuple[float, float]], d: float) -> str | None:
        """Why log target ``t`` is out of reach where the metric flattens toward it (a floor), or None.

        The rule, from the live trials alone: the last trials toward the target span at least
        FLOOR_SPAN (4x) of the coefficient and the metric moved by less than FLOOR_MOVE (15%) across
        them, and even at that rate, with every trial left in the budget (running ones counted as left)
        stepping the most a proposal may (MAX_STEP, 10x), the metric would not come within tolerance of
        the target; and the metric moved by 15% or more at a trial before them (a bend into the flat
        stretch: one at coefficients too small to matter, or a start deep on a floor stepping back off
        it, is stepped through), or, toward less sparsity pressure, it moved back away from the target
        by 7.5% or more across them (e2e's CE-loss increase at blocks.0: 0.41 at coefficient 6.2, 0.447
        at 0.62: the limit without sparsity pressure). Conservative: the extrapolation assumes the
        slope does not flatten further, as a floor's does."""
        live = sorted((p for p in points if math.isfinite(p[1])), key=lambda p: -d * p[0])
        far = next((k for k, p in enumerate(live) if d * (live[0][0] - p[0]) >= FLOOR_SPAN - 1e-9), None)
        if far is None:
            return None
        (xe, ye), (xf, yf) = live[0], live[far]
        ys = [y for _, y in live[: far + 1]]
        if max(ys) - min(ys) >= FLOOR_MOVE:
            return None
        pressure = d * (-1 if self.knob == "k" else 1) > 0  # toward a larger coefficient, a smaller k
        toward = 1.0 if t > ye else -1.0
        turned = not pressure and toward * (ye - yf) <= -FLOOR_MOVE / 2  # it moved back, away from the target
        if not turned and not any(abs(y - yf) >= FLOOR_MOVE for _, y in live[far + 1 :]):
            return None
        rate = max(0.0, toward * (ye - yf) / abs(xe - xf))  # per unit log coefficient, toward the target
        left = self.budget - len(self.finished) - len(self.failed)
        need = abs(t - ye) - self.tolerance
        if need <= 0 or rate * left * MAX_STEP >= need:
            return None
        name = "k" if self.knob == "k" else "coefficients"
        seen = (
            f"({name} {math.exp(xf):.4g}-{math.exp(xe):.4g} moved it {math.exp(yf):.3g} -> {math.exp(ye):.3g}, "
            f"and the {left} trials left would not reach {math.exp(t):g} at that rate)"
        )
        if pressure:
            return (
                f"{self.metric} floors near {math.exp(ye):.3g} at this training length {seen}; fix: train longer "
                "(overrides.train.n_samples) or another architecture (axes.architecture), or aim within the reached "
                "range"
            )
        return (
            f"{self.metric} levels off near {math.exp(ye):.3g} as the sparsity pressure goes {seen}: its limit without "
            "sparsity pressure; fix: aim within the reached range, or train longer or with a larger dictionary to "
            "move the limit"
        )

    def _plateau(self, points: list[tuple[float, float]], d: float) -> str | None:
        """Why the target is out of reach when the live trials at the end of the measured range in
        direction ``d`` span a decade of the coefficient without the metric moving, after it had moved
        before them (a floor or a ceiling); else None. A flat stretch the metric has not yet left (a
        coefficient too small to matter) is no plateau: the search steps on through it, 10x at a time."""
        live = sorted((p for p in points if math.isfinite(p[1])), key=lambda p: -d * p[0])
        far = next((k for k, p in enumerate(live) if d * (live[0][0] - p[0]) >= FLAT_SPAN - 1e-9), None)
        if far is None:
            return None
        span, ys = d * (live[0][0] - live[far][0]), [y for _, y in live[: far + 1]]
        flat = FLAT_SLOPE * span
        moved = any(y < min(ys) - flat or y > max(ys) + flat for _, y in live[far + 1 :])
        if max(ys) - min(ys) > flat or not moved:
            return None
        lo, hi = sorted((live[0][0], live[far][0]))
        fix = (
            f"a floor the training sets, not the coefficient (Adam and gradient clipping normalise the sparsity "
            f"push away); fix: {TRAINING_FIX}"
            if d * (-1 if self.knob == "k" else 1)
            > 0  # toward more sparsity pressure: a larger coefficient, a smaller k
            else "its limit without sparsity pressure; fix: aim within the reached range, or "
            "train longer or with a larger dictionary to move the limit"
        )
        return (
            f"{self.metric} stays within {math.exp(min(ys)):.3g}-{math.exp(max(ys)):.3g} for "
            f"{'k' if self.knob == 'k' else 'coefficients'} "
            f"{math.exp(lo):.3g}-{math.exp(hi):.3g} (a plateau): {fix}"
        )

    def _narrow(self, a: tuple[float, float], b: tuple[float, float]) -> _Aim:
        """A bracket below MIN_BRACKET: noise at this resolution, or the edge where the SAE dies."""
        where = self._between(a, b)
        if math.isfinite(a[1]) and math.isfinite(b[1]):
            return _Aim(
                0,
                state="settled",
                reason=f"{self.metric} crosses the target {where}: noise at this resolution; the closest trial stands",
            )
        return _Aim(
            1,
            state="out of reach",
            reason=f"{self.metric} jumps across the target {where} where the SAE degenerates, so no coefficient "
            f"lands on it; {DEGENERATE_FIX}",
        )

    def _between(self, a: tuple[float, float], b: tuple[float, float]) -> str:
        """``between coefficients 2.9 (81) and 3.1 (degenerate at 79)``: two trials, for a reason."""

        def show(x: float, y: float) -> str:
            if math.isfinite(y):
                return f"{math.exp(y):.3g}"
            reached = [v for c, v, _ in self.degenerate if abs(math.log(c) - x) < 1e-9 and v is not None]
            if reached:
                return f"degenerate at {reached[0]:.3g}"
            return "<= 0" if y == -math.inf and self.metric != "l0" else "degenerate"

        name = "k" if self.knob == "k" else "coefficients"
        return f"between {name} {math.exp(a[0]):.4g} ({show(*a)}) and {math.exp(b[0]):.4g} ({show(*b)})"

    def _slope(self) -> float:
        """d log(value) / d log(coeff): least squares over the live finished trials, the prior with fewer
        than two distinct coefficients; magnitude clamped to SLOPE_RANGE. A fit of the wrong sign is a
        response flat at this resolution: the flattest slope, so that steps out go far (at most 10x)."""
        prior = self._sign()
        points = [p for p in self._points() if math.isfinite(p[1])]
        xs = [p[0] for p in points]
        if len(set(xs)) < 2:
            return prior
        mx, my = sum(xs) / len(xs), sum(p[1] for p in points) / len(points)
        var = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in points) / var
        if slope * prior <= 0:
            return math.copysign(SLOPE_RANGE[0], prior)
        magnitude = min(SLOPE_RANGE[1], max(SLOPE_RANGE[0], abs(slope)))
        return math.copysign(magnitude, prior)

    # ---- results ---------------------------------------------------------------------------------

    def start_trial(self, trial_id: str, proposal: Proposal) -> None:
        self.pending[trial_id] = proposal

    def record(self, trial_id: str, result: float | Mapping[str, Any] | None) -> None:
        """A trial ended: its final metrics (or just its :func:`search_value`), or None when it errored
        or reported none. A trial recorded as failed that ends again (re-run by ``sweeps resume``)
        replaces its failure."""
        proposal = self.pending.pop(trial_id, None) or self.failed.pop(trial_id, None)
        if proposal is None:
            return
        if isinstance(result, Mapping):
            if not self.add_finished(proposal.coeff, result):
                self.failed[trial_id] = proposal
        elif result is None or math.isnan(result):
            self.failed[trial_id] = proposal
        else:
            self.finished.append((proposal.coeff, float(result)))

    def add_finished(self, coeff: float, metrics: Mapping[str, Any]) -> bool:
        """A finished trial at ``coeff`` from its final metrics: its :func:`search_value`, where it is
        degenerate what it still reached, and the dictionary's size; False when it carries no value."""
        value = search_value(self.metric, metrics)
        if value is None:
            return False
        self.finished.append((coeff, value))
        why = degenerate_reason(metrics)
        if why:
            self.degenerate.append((coeff, float(metrics[self.metric]), why))  # finite: search_value said so
        n_dict = metrics.get("n_dict_elements")
        if self.n_dict is None and isinstance(n_dict, int) and n_dict > 0:
            self.n_dict = n_dict
        return True

    def requeue(self, trial_id: str) -> None:
        """A failed trial runs again (``sweeps resume`` re-runs errored trials): pending until it ends."""
        if trial_id in self.failed:
            self.pending[trial_id] = self.failed.pop(trial_id)

    def summary(self) -> list[dict[str, Any]]:
        """Per target: its standing and the closest finished trial."""
        rows = []
        for t in self.targets:
            best, standing = self.closest(t), self.standing(t)
            rows.append(
                {
                    "curve": self.key,
                    "target": t,
                    "met": standing.state == "met",
                    "settled": standing.state == "settled",
                    "state": standing.state,
                    "reason": standing.reason,
                    "closest_coeff": best[0] if best else None,
                    "closest_value": best[1] if best else None,
                }
            )
        return rows


def _log(value: float) -> float:
    """log(value); -inf for a value <= 0 and inf for inf: beyond every target, below or above."""
    if value <= 0:
        return -math.inf
    return math.inf if value == math.inf else math.log(value)


def _bends(points: list[tuple[float, float]], i: int) -> bool:
    """Whether the response bends at the bracket ``points[i], points[i + 1]``: no neighbouring segment
    has the bracket's log-log slope (within 25%), so the bracket holds a kink (where a floor or a
    ceiling starts) and interpolation would keep landing on the flat side."""

    def slope(a: int, b: int) -> float | None:
        if a < 0 or b >= len(points):
            return None
        (xa, ya), (xb, yb) = points[a], points[b]
        return (yb - ya) / (xb - xa) if xb > xa and math.isfinite(ya) and math.isfinite(yb) else None

    inner = slope(i, i + 1)
    outer = [s for s in (slope(i - 1, i), slope(i + 1, i + 2)) if s is not None]
    return inner is not None and bool(outer) and not any(0.8 <= s / inner <= 1.25 for s in outer)


def _straddle(ya: float, yb: float, t: float) -> bool:
    return (ya < t < yb) or (yb < t < ya)


def _near(x: float, xs: list[float]) -> bool:
    return any(abs(x - other) < DUPLICATE for other in xs)
