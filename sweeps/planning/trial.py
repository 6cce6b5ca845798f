"""One trial of a sweep, as planning, running and reporting all see it.

``plan`` makes one :class:`Trial` per point of the axes (``state="planned"``, with its resolved run
config); Tune gets :meth:`Trial.tune_config` as the trial's config and writes it to the trial
directory's ``params.json``; the report reads it back with :meth:`Trial.from_config` and adds what
the run left on disk (state, metrics, error). Imports nothing heavy, so ``plan`` and reports stay quick.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e_sae.hooks import hook_layer

STATES = ("finished", "incomplete", "errored", "pending")  # on disk; a trial not yet run is "planned"
AXES = ("mode", "layer", "hook", "dict_size_to_input_ratio", "sparsity_coeff", "seed")


@dataclass
class Trial:
    mode: str | None = None
    hook: str | None = None
    layer: int | None = None
    dict_size_to_input_ratio: float | None = None
    sparsity_coeff: float | None = None
    seed: int | None = None
    run: dict[str, Any] | None = None  # the resolved run config
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

    @property
    def planned_run(self) -> dict[str, Any]:
        """The resolved run config, which every planned trial carries (a trial read back from disk may not)."""
        if self.run is None:
            raise ValueError(f"trial {self.name}: no run config; only a planned trial carries one")
        return self.run

    @property
    def name(self) -> str:
        """``e2e_L1_r8_s2_seed0``: the trial's axis values, safe as a file name (Tune's trial directory)."""
        layer = self.layer if self.layer is not None else self.hook
        return safe_name(
            f"{self.mode}_L{layer}_r{self.dict_size_to_input_ratio:g}_s{self.sparsity_coeff:.4g}_seed{self.seed}"
        )

    @property
    def model(self) -> str | None:
        return model_label((self.run or {}).get("model"))

    @property
    def n_samples(self) -> Any:
        return self.metrics.get("n_samples")

    @property
    def n_dict_elements(self) -> Any:
        return self.metrics.get("n_dict_elements")

    def tune_config(self) -> dict[str, Any]:
        """What Tune passes to the trainable and saves as ``params.json``."""
        return {**{axis: getattr(self, axis) for axis in AXES}, "run": self.run}

    @classmethod
    def from_config(cls, config: dict[str, Any], trial_id: str | None = None, state: str = "pending") -> Trial:
        """From a Tune config / ``params.json``; axes missing there come from the run config under ``run``."""
        run = config.get("run") if isinstance(config.get("run"), dict) else {}

        def pick(top: str, *run_keys: str) -> Any:
            value = config.get(top)
            return value if value is not None else _dig(run, *run_keys)

        hook = pick("hook", "sae", "position")
        layer = config.get("layer")
        if layer is None and isinstance(hook, str):
            layer = hook_layer(hook)
        return cls(
            mode=pick("mode", "mode"),
            hook=hook,
            layer=layer,
            dict_size_to_input_ratio=pick("dict_size_to_input_ratio", "sae", "dict_size_to_input_ratio"),
            sparsity_coeff=pick("sparsity_coeff", "loss", "sparsity", "coeff"),
            seed=pick("seed", "seed"),
            run=run or None,
            trial_id=trial_id,
            state=state,
        )


# ---- grouped trials ------------------------------------------------------------------------------
# With ``group_size: K`` one Tune trial trains up to K planned trials, its members, in one process
# (sweeps/running/grouped_trial.py). Its config (and params.json) holds each member's ``tune_config()`` and plan
# name; the results list the members, not the group, as trials.


def group_config(
    name: str, members: list[dict[str, Any]], names: list[str], wandb: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A grouped Tune trial's config: its members' configs and names; the members' shared axes and
    their coefficients on top, for Tune's live table; ``wandb``: the sweep's settings, which each
    member then logs as a W&B run of its own."""
    first = members[0]
    return {
        "name": name,
        "mode": first.get("mode"),
        "layer": first.get("layer"),
        "hook": first.get("hook"),
        "sparsity_coeff": [m.get("sparsity_coeff") for m in members],
        "member_names": list(names),
        "members": list(members),
        "wandb": wandb,
    }


def is_group(config: dict[str, Any]) -> bool:
    return isinstance(config.get("members"), list)


def members_of(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(plan name, member config) of a grouped trial's config."""
    names, members = config.get("member_names") or [], config.get("members") or []
    return [(n, m) for n, m in zip(names, members, strict=False) if isinstance(n, str) and isinstance(m, dict)]


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def trial_name(trial: Trial) -> str:
    return trial.name


def trial_names(trials: list[Trial]) -> list[str]:
    """Each trial's name, made unique: trials whose names coincide (coefficients equal to 4 significant
    digits, a value repeated on an axis) get their trial index appended."""
    names = [t.name for t in trials]
    counts = {n: names.count(n) for n in names}
    return [f"{n}_{i}" if counts[n] > 1 else n for i, n in enumerate(names)]


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


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d
