"""One trial of a sweep, as planning, running and reporting all see it.

A trial is its resolved run config: mode, hook, dictionary ratio, sparsity coefficient and seed are
read from it (``run``), never stored beside it, so the one copy of each is the one the run trains
with. ``plan`` makes one :class:`Trial` per point of the axes (``state="planned"``); Tune gets
:meth:`Trial.tune_config` (``{"run": ...}``) as the trial's config and writes it to the trial
directory's ``params.json``; the report reads it back with :meth:`Trial.from_config` and adds what
the run left on disk (state, metrics, error). Names: :mod:`sweeps.planning.names`. Imports nothing
heavy, so ``plan`` and reports stay quick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e_sae.hooks import resid_pre_layer
from sweeps.planning.names import finetune_name, finetune_series, trial_name

STATES = ("finished", "incomplete", "errored", "pending")  # on disk; a trial not yet run is "planned"


@dataclass
class Trial:
    run: dict[str, Any] | None = None  # the resolved run config (a trial read back from disk may lack it)
    # What the run left on disk. ``metrics``: the last ``final`` row when finished, else the latest
    # row (incomplete trials), else empty.
    trial_id: str | None = None  # the trial directory's name
    state: str = "planned"
    metrics: dict[str, Any] = field(default_factory=dict)
    n_rows: int = 0
    error: str | None = None  # first line of error.txt
    path: Path | None = None
    # A member of a grouped Tune trial (``path`` is the group's directory): its name there, under
    # which the group keeps its run directory and its part of every checkpoint.
    member: str | None = None
    # A fine-tune stage's trial: {"stage", "parent" (its name), "parent_trial" (the parent's Tune trial
    # directory), "member" (the parent's name in a grouped one, else None), "parent_mode", "fraction"}
    finetune: dict[str, Any] | None = None
    # Seconds of Tune trial time the trial cost (its final row's time_total_s). A grouped Tune trial's
    # members train together, so each is given its group's time at its final row divided by the
    # group's members (sweeps.reporting.results); None when unknown.
    wall_s: float | None = None

    @property
    def planned_run(self) -> dict[str, Any]:
        """The resolved run config, which every planned trial carries (a trial read back from disk may not)."""
        if self.run is None:
            raise ValueError(f"trial {self.trial_id}: no run config; only a planned trial carries one")
        return self.run

    def _field(self, *keys: str) -> Any:
        d: Any = self.run
        for k in keys:
            if not isinstance(d, dict):
                return None
            d = d.get(k)
        return d

    @property
    def mode(self) -> str | None:
        return self._field("mode")

    @property
    def hook(self) -> str | None:
        return self._field("sae", "position")

    @property
    def layer(self) -> int | None:
        """L of a ``blocks.L.hook_resid_pre`` hook (the sweep's ``layer`` axis), else None."""
        return resid_pre_layer(self.hook) if isinstance(self.hook, str) else None

    @property
    def dict_size_to_input_ratio(self) -> float | None:
        return self._field("sae", "dict_size_to_input_ratio")

    @property
    def sparsity_coeff(self) -> float | None:
        """``loss.sparsity.coeff`` of the run config (the sweep file's ``sparsity_coeff`` axis)."""
        return self._field("loss", "sparsity", "coeff")

    @property
    def seed(self) -> int | None:
        return self._field("seed")

    @property
    def architecture(self) -> str:
        """``sae.architecture`` (relu where the run config predates architectures)."""
        return self._field("sae", "architecture") or "relu"

    @property
    def k(self) -> int | None:
        """``sae.k``: the topk family's sparsity knob (None for relu and jumprelu)."""
        return self._field("sae", "k")

    @property
    def target_l0(self) -> float | None:
        """``loss.sparsity.target_l0``: jumprelu's target L0 (the sweep file's ``target_l0`` axis)."""
        return self._field("loss", "sparsity", "target_l0")

    @property
    def name(self) -> str:
        """``e2e_L1_r8_s2_seed0``: the trial's axis values (:func:`sweeps.planning.names.trial_name`); a
        fine-tune's: its parent's, stage, mode and length (:func:`sweeps.planning.names.finetune_name`)."""
        if self.finetune is not None:
            ft = self.finetune
            return finetune_name(ft["parent"], ft["stage"], self.mode, ft["fraction"])
        return trial_name(
            self.mode,
            self.layer,
            self.hook,
            self.dict_size_to_input_ratio,
            self.sparsity_coeff,
            self.seed,
            self.architecture,
            self.k,
            self.target_l0,
        )

    @property
    def series(self) -> str | None:
        """What the report draws one frontier per (and compares): the mode, or for a fine-tune
        ``local -> e2e, 5%`` (its parent's mode, its own, its length)."""
        if self.finetune is None:
            return self.mode
        ft = self.finetune
        return finetune_series(ft["parent_mode"], self.mode, ft["fraction"])

    @property
    def model(self) -> str | None:
        return model_label(self._field("model"))

    @property
    def n_samples(self) -> Any:
        return self.metrics.get("n_samples")

    @property
    def n_dict_elements(self) -> Any:
        return self.metrics.get("n_dict_elements")

    def tune_config(self) -> dict[str, Any]:
        """What Tune passes to the trainable and saves as ``params.json``: the run config, once (and a
        fine-tune's parent)."""
        return {"run": self.run} if self.finetune is None else {"run": self.run, "finetune": self.finetune}

    @classmethod
    def from_config(cls, config: dict[str, Any], trial_id: str | None = None, state: str = "pending") -> Trial:
        """From a Tune config / ``params.json`` (experiments written before the axes were dropped from
        it hold the same values in their run config)."""
        run, finetune = config.get("run"), config.get("finetune")
        return cls(
            run=run if isinstance(run, dict) else None,
            trial_id=trial_id,
            state=state,
            finetune=finetune if isinstance(finetune, dict) else None,
        )


# ---- grouped trials ------------------------------------------------------------------------------
# With ``group_size: K`` one Tune trial trains up to K planned trials, its members, in one process
# (sweeps/running/grouped_trial.py). Its config (and params.json) holds each member's ``tune_config()`` and plan
# name; the results list the members, not the group, as trials.


def group_config(
    name: str, members: list[dict[str, Any]], names: list[str], wandb: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A grouped Tune trial's config: its members' configs (each a trial's ``tune_config()``) and names;
    ``wandb``: the sweep's settings, which each member then logs as a W&B run of its own."""
    return {"name": name, "member_names": list(names), "members": list(members), "wandb": wandb}


def is_group(config: dict[str, Any]) -> bool:
    return isinstance(config.get("members"), list)


def members_of(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(plan name, member config) of a grouped trial's config."""
    names, members = config.get("member_names") or [], config.get("members") or []
    return [(n, m) for n, m in zip(names, members, strict=False) if isinstance(n, str) and isinstance(m, dict)]


def model_label(model: Any) -> str | None:
    """``gpt2`` for a name, a short description for a TL-native config, None when unknown."""
    if isinstance(model, str):
        return model
    if isinstance(model, dict):
        if model.get("name"):
            return str(model["name"])
        native = model.get("native")
        if isinstance(native, dict):
            shape = ", ".join(f"{k}={native[k]}" for k in ("n_layers", "d_model", "n_ctx") if k in native)
            return f"native TransformerLens model ({shape})"
    return None
