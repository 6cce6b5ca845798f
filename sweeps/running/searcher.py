"""The target search (:mod:`sweeps.planning.curve_search`) as a Ray Tune search algorithm: one Tune trial per
proposal, or up to ``group_size`` proposals along one curve as one grouped Tune trial
(:mod:`sweeps.running.grouped_trial`).

Why not Tune's stock wrappers alone: three of their rules would keep results from the search after
``sweeps resume`` re-runs errored trials (``resume_errored``; Tune keeps their trial ids):

- ``ConcurrencyLimiter`` drops results of trials it no longer counts as live, and an errored trial
  left its set when it errored. So :class:`TargetSearcher` limits concurrency itself
  (``set_max_concurrency``) and the limiter only tells Tune how many trials may wait for resources.
- ``SearchGenerator`` restores the "finished" flag the searcher's last FINISHED set, and then asks
  for no trial again, although a re-run's result can give a curve more to do (a curve whose start
  errored has only then something to step from). :class:`TargetSearchGenerator` does not restore that
  flag; the searcher's own restored state says whether it is finished.
- The searcher itself recorded the errored trial as failed; restoring puts every errored trial back
  to pending, since the resume re-runs each of them, and the result of each is recorded when it ends.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator

from sweeps.planning.curve_search import CurveSearch, Proposal
from sweeps.planning.names import retry_name, search_group_name
from sweeps.planning.trial import Trial, group_config


def config_with_coeff(template: dict[str, Any], proposal: Proposal, knob: str = "coeff") -> dict[str, Any]:
    """A trial's Tune config from its curve's template, the proposal set in its run config (the sparsity
    coefficient, or the topk family's ``sae.k``); a retry of a start whose trials errored is named
    ``<trial>_retry<n>`` (its own trial directory)."""
    config = copy.deepcopy(template)
    if knob == "k":
        config["run"]["sae"]["k"] = int(proposal.coeff)
    else:
        config["run"]["loss"]["sparsity"]["coeff"] = proposal.coeff
    if proposal.attempt > 1:
        config["name"] = retry_name(Trial.from_config(config).name, proposal.attempt - 1)
    return config


def trial_label(config: dict[str, Any]) -> str:
    """A Tune trial's name: a grouped trial's own, else its trial's (``e2e_L1_r8_s0.7413_seed0``, or
    ``..._retry<n>`` for a retried start)."""
    return config.get("name") or Trial.from_config(config).name


class SelfLimitingSearcher(Searcher):
    """A searcher that limits how many of its trials run at once itself (see the module docstring):
    Tune's ConcurrencyLimiter hands it the limit and then filters nothing."""

    def __init__(self) -> None:
        super().__init__(metric=None, mode=None)
        self.max_concurrent: int | None = None
        self.running: set[str] = set()  # Tune trials suggested (or re-run) and not yet complete

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max_concurrent
        return True

    def at_limit(self) -> bool:
        return bool(self.max_concurrent) and len(self.running) >= (self.max_concurrent or 0)


class TargetSearcher(SelfLimitingSearcher):
    """Ray Tune searcher over curves; each curve's template is a complete trial config but for the
    sparsity coefficient. Deterministic given the results, so a resumed search proposes what an
    uninterrupted one fed the same results would.

    ``group_size`` K > 1: up to K of a curve's proposals run as one grouped Tune trial; each member is
    recorded on its own when the group ends (an errored group: no information for any of its members).
    ``wandb``: the sweep's W&B settings for such members."""

    def __init__(
        self,
        curves: dict[str, CurveSearch],
        templates: dict[str, dict[str, Any]],
        group_size: int = 1,
        wandb: dict[str, Any] | None = None,
        packable: dict[str, list[str]] | None = None,
    ):
        super().__init__()
        self.curves = curves
        self.templates = templates
        self.group_size, self.wandb = group_size, wandb
        self.packable = packable or {}  # curve -> curves whose proposals may share its grouped trials
        self.trial_curve: dict[str, str] = {}  # Tune trial -> its curve
        # grouped trial -> (member id, name, curve) per member (pairs in state saved before groups spanned curves)
        self.trial_members: dict[str, list[tuple[str, ...]]] = {}
        self.errored: set[str] = set()  # Tune trials that ended in an error: a resume re-runs them

    # Ray types suggest() as returning a config dict or None, but its own protocol also takes
    # Searcher.FINISHED (a str) to end the search; this returns that too.
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        if self.at_limit():
            return None
        for key, curve in self.curves.items():
            proposals = curve.proposals()
            if proposals:
                self.trial_curve[trial_id] = key
                self.running.add(trial_id)
                if self.group_size == 1:
                    curve.start_trial(trial_id, proposals[0])
                    return config_with_coeff(self.templates[key], proposals[0], curve.knob)
                picked = [(key, p) for p in proposals[: self.group_size]]
                for other in self.packable.get(key, []):  # fill the group from curves it may share a pass with
                    room = self.group_size - len(picked)
                    picked += [(other, p) for p in self.curves[other].proposals()[:room]] if room > 0 else []
                return self._grouped(trial_id, picked)
        if not self.running and all(c.is_done() for c in self.curves.values()):
            return Searcher.FINISHED
        return None  # waiting for running trials

    def _grouped(self, trial_id: str, picked: list[tuple[str, Proposal]]) -> dict[str, Any]:
        """One grouped Tune trial of proposals, the first curve's first, then other curves' (each
        member recorded on its own curve)."""
        members = [config_with_coeff(self.templates[k], p, self.curves[k].knob) for k, p in picked]
        names = [trial_label(m) for m in members]  # unique: a curve's coefficients are >= 1% apart
        ids = [f"{trial_id}/{i}" for i in range(len(picked))]
        for member_id, (key, proposal) in zip(ids, picked, strict=True):
            self.curves[key].start_trial(member_id, proposal)
        self.trial_members[trial_id] = [(i, n, k) for i, n, (k, _) in zip(ids, names, picked, strict=True)]
        parts = []
        for key in dict.fromkeys(k for k, _ in picked):  # curves in order, each with its proposals
            mine = [p for k, p in picked if k == key]
            retry = max(p.attempt for p in mine) - 1
            parts.append(search_group_name(key, [p.coeff for p in mine], retry, self.curves[key].knob))
        return group_config("+".join(parts), members, names, self.wandb)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self.trial_curve:
            return
        self.running.discard(trial_id)
        (self.errored.add if error else self.errored.discard)(trial_id)
        for member_id, prefix, key in self._members(trial_id):
            curve = self.curves[key]
            # Tune hands searchers the result flattened: a member's metrics are members/<name>/<metric>
            metrics = {k[len(prefix) :]: v for k, v in (result or {}).items() if k.startswith(prefix)}
            curve.record(member_id, None if error else metrics)

    def _members(self, trial_id: str) -> list[tuple[str, str, str]]:
        """(the curve search's id, the result-key prefix, its curve) of each proposal a Tune trial ran
        (a member saved before groups spanned curves has its trial's curve)."""
        if trial_id in self.trial_members:
            own = self.trial_curve[trial_id]
            return [(m[0], f"members/{m[1]}/", m[2] if len(m) > 2 else own) for m in self.trial_members[trial_id]]
        return [(trial_id, "", self.trial_curve[trial_id])]

    def save(self, checkpoint_path: str) -> None:
        state = {
            "curves": self.curves,
            "templates": self.templates,
            "trial_curve": self.trial_curve,
            "trial_members": self.trial_members,
            "packable": self.packable,
            "running": self.running,
            "errored": self.errored,
        }
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        """The saved search, with every errored trial pending again: ``sweeps resume`` re-runs them
        (``resume_errored=True``) under their ids, and each one's result is recorded when it ends."""
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.curves, self.templates, self.trial_curve = state["curves"], state["templates"], state["trial_curve"]
        self.trial_members, self.running, self.errored = state["trial_members"], state["running"], state["errored"]
        self.packable = state.get("packable", {})
        for trial_id in self.errored:
            for member_id, _, key in self._members(trial_id):
                self.curves[key].requeue(member_id)
            self.running.add(trial_id)
        self.errored = set()


class TargetSearchGenerator(SearchGenerator):
    """Tune's SearchGenerator, except that a restored one is not finished because it once was (see the
    module docstring). Within a session Tune's own stop (``set_finished``) still ends it."""

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._finished = False


def target_search_alg(searcher: Searcher, max_concurrent: int | None) -> TargetSearchGenerator:
    """The search algorithm for ``tune.TuneConfig`` (with ``max_concurrent_trials`` left unset): the
    searcher (the target search's, or a staged sweep's: sweeps/running/stages.py) limits concurrency;
    a ConcurrencyLimiter around it only sizes Tune's queue of trials waiting for resources (Tune reads
    it from the limiter: tune_controller._get_max_pending_trials)."""
    return TargetSearchGenerator(ConcurrencyLimiter(searcher, max_concurrent) if max_concurrent else searcher)
