"""Frontier search: the sweep places sparsity coefficients itself until each group's trials land on the
targets the user names (L0 or CE-loss increase), instead of a grid whose scale must be guessed.

Why this shape: within one group (mode, layer, dictionary ratio, seed) L0 falls and CE-loss increase
rises monotonically with the sparsity coefficient, close to a straight line in log-log. So for each
unmet target the search interpolates (in log-log) between the two finished trials that bracket it, and
where none does, steps out from the nearest trial along the fitted slope (bounded, and with a prior
slope until two trials exist). Noise and small wiggles cannot make it loop: a target whose bracket has
shrunk below :data:`MIN_BRACKET` is settled by its closest trial, no coefficient is proposed twice,
and every group has a budget.

:class:`GroupSearch` is the pure state machine (tested without Ray); :class:`FrontierSearcher` adapts
it to Ray Tune's ``Searcher`` interface, one Tune trial per proposal.
"""

from __future__ import annotations

import copy
import math
import pickle
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import Searcher

from sweeps.trial import Trial, group_config, safe_name

# The metrics a search can target, with the sign of d log(metric) / d log(coeff) and a prior slope.
TARGET_METRICS = {"l0": -1.0, "ce_loss_increase": 1.0}
MAX_STEP = math.log(10.0)  # at most 10x the coefficient away from the nearest trial per proposal
SLOPE_RANGE = (0.1, 10.0)  # |fitted slope| is clamped to this range (a noisy fit must not jump far)
MIN_BRACKET = math.log(1.02)  # a bracket narrower than 2% in the coefficient settles its target
DUPLICATE = math.log(1.01)  # coefficients within 1% of a tried one count as the same
VALUE_FLOOR = 1e-6  # log of a non-positive value (L0 0, a negative CE increase): far below any target


@dataclass
class Proposal:
    coeff: float
    target: float


@dataclass
class GroupSearch:
    """The coefficient search of one group toward ``targets`` of ``metric``.

    ``finished``: (coeff, metric value) of trials that reported final metrics; ``failed``: coefficients
    whose trials errored (no information, but never proposed again); ``pending``: trial id -> proposal.
    """

    key: str
    metric: str
    targets: list[float]
    tolerance: float  # |log(achieved / target)| that counts as met
    budget: int  # trials this group may start, errored ones included
    start: float  # the first coefficient
    finished: list[tuple[float, float]] = field(default_factory=list)
    failed: list[float] = field(default_factory=list)
    pending: dict[str, Proposal] = field(default_factory=dict)
    settled: set[float] = field(default_factory=set)  # targets given up: bracket below MIN_BRACKET

    # ---- what is known ---------------------------------------------------------------------------

    @property
    def n_started(self) -> int:
        return len(self.finished) + len(self.failed) + len(self.pending)

    def closest(self, target: float) -> tuple[float, float] | None:
        """The finished (coeff, value) nearest to ``target`` in log space."""
        if not self.finished:
            return None
        return min(self.finished, key=lambda cv: abs(_log(cv[1]) - math.log(target)))

    def is_met(self, target: float) -> bool:
        best = self.closest(target)
        return best is not None and abs(_log(best[1]) - math.log(target)) <= self.tolerance

    def open_targets(self) -> list[float]:
        """Targets neither met nor settled, nor aimed at by a pending trial."""
        aimed = {p.target for p in self.pending.values()}
        return [t for t in self.targets if not self.is_met(t) and t not in self.settled and t not in aimed]

    def is_done(self) -> bool:
        """Nothing pending and nothing more to propose (all targets met or settled, or budget spent)."""
        if self.pending:
            return False
        return self.n_started >= self.budget or not self.open_targets() or not self.proposals(dry_run=True)

    # ---- what to try next ------------------------------------------------------------------------

    def proposals(self, dry_run: bool = False) -> list[Proposal]:
        """One new coefficient per open target, within the budget, never one tried or pending already."""
        out: list[Proposal] = []
        room = self.budget - self.n_started
        for target in self.open_targets():
            if len(out) >= room:
                break
            x = self._next_log_coeff(math.log(target), dry_run, taken=[math.log(p.coeff) for p in out])
            if x is not None:
                out.append(Proposal(math.exp(x), target))
        return out

    def _tried(self) -> list[float]:
        return (
            [math.log(c) for c, _ in self.finished]
            + [math.log(c) for c in self.failed]
            + [math.log(p.coeff) for p in self.pending.values()]
        )

    def _next_log_coeff(self, t: float, dry_run: bool, taken: list[float]) -> float | None:
        tried = self._tried() + taken
        points = sorted((math.log(c), _log(v)) for c, v in self.finished)
        if not points:  # nothing known yet: the start, once
            x = math.log(self.start)
            return None if _near(x, tried) else x
        bracket = _tightest_bracket(points, t)
        if bracket is not None:
            (x0, y0), (x1, y1) = bracket
            if x1 - x0 < MIN_BRACKET:  # the response is noise at this resolution: keep the closest trial
                if not dry_run:
                    self.settled.add(math.exp(t))
                return None
            x = x0 + (t - y0) * (x1 - x0) / (y1 - y0)
            candidates = [x, (x0 + x1) / 2]  # the midpoint if interpolation lands on a tried coefficient
        else:
            slope = self._slope(points)
            xa, ya = min(points, key=lambda p: abs(p[1] - t))  # by monotonicity: the extreme point nearest t
            step = max(-MAX_STEP, min(MAX_STEP, (t - ya) / slope))
            x = xa + step
            candidates = [x, xa + step * 1.5, xa + step * 0.5]
        for x in candidates:
            if not _near(x, tried):
                return x
        return None

    def _slope(self, points: list[tuple[float, float]]) -> float:
        """d log(value) / d log(coeff): least squares over the finished trials, the prior with fewer than
        two distinct coefficients or a fit of the wrong sign; magnitude clamped to SLOPE_RANGE."""
        prior = TARGET_METRICS[self.metric]
        xs = [p[0] for p in points]
        if len(set(xs)) < 2:
            return prior
        mx, my = sum(xs) / len(xs), sum(p[1] for p in points) / len(points)
        var = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in points) / var
        if slope * prior <= 0:
            return prior
        magnitude = min(SLOPE_RANGE[1], max(SLOPE_RANGE[0], abs(slope)))
        return math.copysign(magnitude, prior)

    # ---- results ---------------------------------------------------------------------------------

    def start_trial(self, trial_id: str, proposal: Proposal) -> None:
        self.pending[trial_id] = proposal

    def record(self, trial_id: str, value: float | None) -> None:
        """A trial ended: its final metric value, or None when it errored or reported none."""
        proposal = self.pending.pop(trial_id, None)
        if proposal is None:
            return
        if value is None or not math.isfinite(value):
            self.failed.append(proposal.coeff)
        else:
            self.finished.append((proposal.coeff, float(value)))

    def summary(self) -> list[dict[str, Any]]:
        """Per target: met or not, and the closest finished trial."""
        rows = []
        for t in self.targets:
            best = self.closest(t)
            rows.append(
                {
                    "group": self.key,
                    "target": t,
                    "met": self.is_met(t),
                    "settled": t in self.settled,
                    "closest_coeff": best[0] if best else None,
                    "closest_value": best[1] if best else None,
                }
            )
        return rows


def _log(value: float) -> float:
    return math.log(max(value, VALUE_FLOOR))


def _near(x: float, xs: list[float]) -> bool:
    return any(abs(x - other) < DUPLICATE for other in xs)


def _tightest_bracket(points: list[tuple[float, float]], t: float):
    """Of the neighbouring (by coefficient) trials whose values lie on both sides of ``t``, the pair
    closest together; None if no pair straddles it."""
    pairs = [(a, b) for a, b in zip(points, points[1:], strict=False) if (a[1] - t) * (b[1] - t) < 0]
    return min(pairs, key=lambda ab: ab[1][0] - ab[0][0]) if pairs else None


# ---- Ray Tune --------------------------------------------------------------------------------------


def config_with_coeff(template: dict[str, Any], coeff: float) -> dict[str, Any]:
    """A trial's Tune config from its group's template: the coefficient set in both places."""
    config = copy.deepcopy(template)
    config["sparsity_coeff"] = coeff
    config["run"]["loss"]["sparsity"]["coeff"] = coeff
    return config


class FrontierSearcher(Searcher):
    """Ray Tune searcher over groups; each group's template is a complete trial config but for the
    sparsity coefficient. Deterministic given the results, so a resumed search proposes what an
    uninterrupted one fed the same results would.

    ``group_size`` K > 1: up to K of a group's proposals run as one grouped Tune trial
    (sweeps/grouping.py); each member is recorded on its own when the group ends (an errored group:
    no information for any of its members). ``wandb``: the sweep's W&B settings for such members."""

    def __init__(
        self,
        groups: dict[str, GroupSearch],
        templates: dict[str, dict[str, Any]],
        group_size: int = 1,
        wandb: dict[str, Any] | None = None,
    ):
        super().__init__(metric=None, mode=None)
        self.groups = groups
        self.templates = templates
        self.group_size, self.wandb = group_size, wandb
        self.trial_group: dict[str, str] = {}
        self.trial_members: dict[str, list[tuple[str, str]]] = {}  # grouped trial -> (member id, name)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        for key, group in self.groups.items():
            proposals = group.proposals()
            if proposals:
                self.trial_group[trial_id] = key
                if self.group_size == 1:
                    group.start_trial(trial_id, proposals[0])
                    return config_with_coeff(self.templates[key], proposals[0].coeff)
                return self._grouped(trial_id, key, proposals[: self.group_size])
        if all(g.is_done() for g in self.groups.values()):
            return Searcher.FINISHED
        return None  # waiting for running trials

    def _grouped(self, trial_id: str, key: str, proposals: list[Proposal]) -> dict[str, Any]:
        members = [config_with_coeff(self.templates[key], p.coeff) for p in proposals]
        names = [Trial.from_config(m).name for m in members]  # unique: coefficients are >= 1% apart
        ids = [f"{trial_id}/{i}" for i in range(len(proposals))]
        for member_id, proposal in zip(ids, proposals, strict=True):
            self.groups[key].start_trial(member_id, proposal)
        self.trial_members[trial_id] = list(zip(ids, names, strict=True))
        name = safe_name(f"{key}_s" + "_".join(f"{p.coeff:.4g}" for p in proposals))
        return group_config(name, members, names, self.wandb)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        key = self.trial_group.get(trial_id)
        if key is None:
            return
        group = self.groups[key]
        if trial_id in self.trial_members:
            for member_id, name in self.trial_members.pop(trial_id):
                # Tune hands searchers the result flattened: members/<name>/<metric>
                key = f"members/{name}/{group.metric}"
                group.record(member_id, None if error else _metric(result, key))
            return
        group.record(trial_id, None if error else _metric(result, group.metric))

    def save(self, checkpoint_path: str) -> None:
        state = {
            "groups": self.groups,
            "templates": self.templates,
            "trial_group": self.trial_group,
            "trial_members": self.trial_members,
        }
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.groups, self.templates, self.trial_group = state["groups"], state["templates"], state["trial_group"]
        self.trial_members = state.get("trial_members", {})  # absent in a search saved before groups


def _metric(result: dict[str, Any] | None, metric: str) -> float | None:
    value = result.get(metric) if isinstance(result, dict) else None
    return value if isinstance(value, (int, float)) else None
