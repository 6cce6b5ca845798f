"""A sweep's plan: the sweep file expanded, every trial's run config checked once, and the Tune trials.

Every command builds one :class:`Plan` and works from it (``plan`` prints it, ``run`` hands its Tune
trials to Tune and saves its spec, ``resume`` rebuilds it from the saved spec), so each trial's run
config is validated exactly once per command.

- A grid: :attr:`Plan.trials` are every point of the axes; :attr:`Plan.tune_trials` their Tune configs,
  one per trial, or with ``group_size: K`` one per group of up to K trials that may train on one clean
  pass (:func:`plan_groups`: the library's rule, :data:`e2e_sae.group.MEMBER_FIELDS`).
- A target search: :attr:`Plan.trials` are one template per curve (its coefficient the search's start);
  the searcher makes the Tune trials as results come in (:mod:`sweeps.running.searcher`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e_sae.config import ConfigError, RunConfig, run_config_from_dict
from e2e_sae.group import check_members, shared_fields
from e2e_sae.model_shape import ModelShape
from e2e_sae.validate import check_config, model_shape
from sweeps.planning.curve_start import CurveStart, curve_starts
from sweeps.planning.finetune_stage import check_children
from sweeps.planning.names import curve_name, grid_group_name, unique_names
from sweeps.planning.spec import SweepSpec, base_run_dict, expand_trials, load_sweep
from sweeps.planning.trial import Trial, group_config


@dataclass
class Plan:
    spec: SweepSpec
    trials: list[Trial]  # grid: every planned trial; target search: one template per curve
    names: list[str]  # each trial's unique name (target search: its curve's name)
    run_configs: list[RunConfig]  # each trial's run config, validated and checked against the model
    tune_trials: list[dict[str, Any]]  # grid: each Tune trial's config; target search: none (the searcher's)
    starts: list[CurveStart] = field(default_factory=list)  # target search: each curve's dictionary and start
    shape_known: bool = True  # False: the model's layers and context were not checked (offline plan)

    @classmethod
    def from_spec(cls, spec: SweepSpec, against_model: bool = True, network: bool = True) -> Plan:
        """``against_model``: also check every run config against the model (its layers, context and
        data; ``status`` of a copied experiment skips it, the model need not be on that machine);
        ``network``: an HF model's shape may come from the hub, not only from the HF cache."""
        trials = expand_trials(spec)
        configs, shape = validate_trials(trials, against_model, network)
        known = shape is not None
        check_children(spec.finetune, trials)
        if spec.search.kind == "targets":
            starts = search_starts(spec, trials, configs, shape)
            return cls(spec, trials, [_curve(t) for t in trials], configs, [], starts, known)
        names = unique_names([t.name for t in trials])
        if spec.group_size == 1:
            return cls(spec, trials, names, configs, [t.tune_config() for t in trials], [], known)
        groups = plan_groups(trials, names, configs, spec.group_size, group_wandb(spec))
        return cls(spec, trials, names, configs, groups, [], known)

    @classmethod
    def from_file(cls, path: str | Path, set_items: list[str] | None = None, network: bool = True) -> Plan:
        return cls.from_spec(load_sweep(path, set_items), network=network)

    @property
    def is_search(self) -> bool:
        return self.spec.search.kind == "targets"

    @property
    def base_run(self) -> dict[str, Any]:
        return base_run_dict(self.spec)

    @property
    def tune_names(self) -> list[str]:
        """A grid's Tune trial names: the trials' names, or the groups' (``e2e_L1_group0``)."""
        return self.names if self.spec.group_size == 1 else [c["name"] for c in self.tune_trials]

    @property
    def curves(self) -> dict[str, dict[str, Any]]:
        """A target search's curves: name (``e2e_L1_r8_seed0``) -> the template trial config."""
        return {name: t.tune_config() for name, t in zip(self.names, self.trials, strict=True)}

    @property
    def model_label(self) -> str:
        return self.trials[0].model or "native (random init)"

    def saved_text(self) -> str:
        """sweep.yaml as ``run`` saves it: the validated spec with its base run config inline (resumable
        on another machine), the model's label for the report, and the trial count (a target search: its
        curves and its budget in trials); read back by :func:`sweeps.planning.spec.read_saved_sweep`."""
        spec = self.spec
        doc = spec.model_dump(mode="json", exclude={"group_size"} if spec.group_size == 1 else None)
        doc["run"], doc["base"] = self.base_run, None
        doc["model"] = self.model_label
        if self.is_search:
            doc.update(n_curves=len(self.trials), max_trials=len(self.trials) * spec.search.budget)
        else:
            doc["n_trials"] = len(self.trials)
        return yaml.safe_dump(doc, sort_keys=False)


def _curve(t: Trial) -> str:
    return curve_name(t.mode, t.layer, t.hook, t.dict_size_to_input_ratio, t.seed, t.architecture)


def search_starts(spec: SweepSpec, trials: list[Trial], configs: list[RunConfig], shape: Any) -> list[CurveStart]:
    """Each curve's dictionary size and first coefficient or k (sweeps.planning.curve_start); an L0
    target no curve's dictionary can reach (L0 counts its active elements) is refused here."""
    given = [
        t.k is not None and t.mode in spec.search.start_k or t.k is None and t.mode in spec.search.start for t in trials
    ]
    starts = curve_starts(configs, [t.k if t.k is not None else t.sparsity_coeff for t in trials], given, shape)
    sizes = [s.n_dict for s in starts if s.n_dict is not None]
    if spec.search.metric == "l0" and sizes and max(spec.search.target_values) >= max(sizes):
        beyond = [t for t in spec.search.target_values if t >= max(sizes)]
        raise ConfigError(
            f"search.targets.l0: {', '.join(f'{t:g}' for t in beyond)} not below the dictionary size {max(sizes)} "
            "(L0 counts active dictionary elements); lower the target or raise axes.dict_size_to_input_ratio"
        )
    return starts


def validate_trials(
    trials: list[Trial], against_model: bool = True, network: bool = True
) -> tuple[list[RunConfig], ModelShape | None]:
    """Every trial's run config validated and (``against_model``) put through the library's checks
    (hooks against the model, context, data sources, pretrained SAE): one-line errors naming the trial;
    with the model's shape where known (None: not checked, e.g. an offline plan without a cached config)."""
    configs = []
    for t in trials:
        try:
            configs.append(run_config_from_dict(t.planned_run))
        except ConfigError as err:
            raise ConfigError(f"trial {t.name}: {err}") from None
    if not against_model:
        return configs, None
    shape = model_shape(configs[0].model, network)
    layers = sorted({t.layer for t in trials if t.layer is not None})
    if shape is not None and layers and layers[-1] >= shape.n_layers:
        raise ConfigError(
            f"axes.layer: layer {layers[-1]} is out of range; the model has layers 0..{shape.n_layers - 1}"
        )
    for t, cfg in zip(trials, configs, strict=True):
        try:
            check_config(cfg, shape)
        except ConfigError as err:
            raise ConfigError(f"trial {t.name}: {err}") from None
    return configs, shape


def group_wandb(spec: SweepSpec) -> dict[str, Any] | None:
    """The W&B settings a grouped trial's members log with (a W&B run each, in the sweep's W&B group)."""
    if spec.wandb.mode == "disabled":
        return None
    return {"project": spec.wandb.project, "entity": spec.wandb.entity, "mode": spec.wandb.mode, "group": spec.name}


def plan_groups(
    trials: list[Trial],
    names: list[str],
    configs: list[RunConfig],
    group_size: int,
    wandb: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The grouped Tune trials' configs: trials that may share a group (the same shared fields), in plan
    order, cut into chunks of at most ``group_size``, each checked as the library checks a group."""
    sets: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        sets.setdefault(json.dumps(shared_fields(cfg), sort_keys=True, default=str), []).append(i)
    groups: list[dict[str, Any]] = []
    for indices in sets.values():
        for start in range(0, len(indices), group_size):
            chunk = indices[start : start + group_size]
            members = [names[i] for i in chunk]
            check_members([configs[i].model_copy(update={"output_dir": Path(names[i])}) for i in chunk], members)
            first = trials[chunk[0]]
            name = grid_group_name(first.mode, first.layer, first.hook, len(groups), first.architecture)
            groups.append(group_config(name, [trials[i].tune_config() for i in chunk], members, wandb))
    return groups
