"""The sweep file: a base run config plus axes, validated and expanded before Ray starts.

    name: pycode-layers
    base: e2e_sae/configs/quickstart_e2e.yaml     # or an inline `run:` mapping
    overrides: {train.n_samples: 2000}            # dotted overrides for every trial
    axes:
      mode: [local, e2e, e2e+ds]
      layer: [1, 2]                               # blocks.{layer}.hook_resid_pre
      dict_size_to_input_ratio: [8]
      sparsity_coeff: {local: {log_space: [0.5, 20], num: 3}, e2e: [0.5, 2], e2e+ds: [1, 4]}
      seed: [0]
    resources_per_trial: {cpu: 1, gpu: 0.25}

Trials are the product of the axes (sparsity coefficients per mode: their scales differ by
10-100x). Each trial's run config is validated here, so a bad override fails before any compute.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from e2e_sae.architectures.spec import PENALISED, TOPK_FAMILY, Architecture
from e2e_sae.config import (
    MODES,
    ConfigError,
    Mode,
    RunConfig,
    apply_overrides,
    flatten_dotted,
    format_validation_error,
    parse_overrides,
    read_yaml_mapping,
)
from e2e_sae.hooks import resid_pre
from sweeps.experiment import experiment_path, read_sweep_file
from sweeps.planning.curve_search import SEARCH_METRICS
from sweeps.planning.finetune_stage import FinetuneStage, check_stages
from sweeps.planning.trial import Trial, model_label

DEFAULT_START_K = 32  # a target search's first k for the topk family, without search.start_k or sae.k


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogSpace(_Strict):
    """``num`` values spaced evenly in log between the two ends (inclusive)."""

    log_space: tuple[float, float] = Field(description="the two ends, both > 0 (inclusive)")
    num: int = Field(ge=1, description="how many values, spaced evenly in log")

    @field_validator("log_space")
    @classmethod
    def _positive(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0 or v[1] <= 0:
            raise ValueError("log_space ends must be > 0")
        return v

    def values(self) -> list[float]:
        lo, hi = (math.log(x) for x in self.log_space)
        if self.num == 1:
            return [self.log_space[0]]
        return [float(f"{math.exp(lo + (hi - lo) * i / (self.num - 1)):.6g}") for i in range(self.num)]


Coeffs = list[float] | LogSpace


def _coeff_values(c: Coeffs) -> list[float]:
    return c.values() if isinstance(c, LogSpace) else list(c)


class Axes(_Strict):
    mode: list[Mode] = Field(min_length=1, description="training modes: local, e2e, e2e+ds")
    layer: list[int] | None = Field(
        default=None,
        min_length=1,
        description="layers L: the SAE at blocks.L.hook_resid_pre; default the base's position",
    )
    dict_size_to_input_ratio: list[float] | None = Field(
        default=None, min_length=1, description="dictionary sizes as n_dict / d_in; default the base's"
    )
    sparsity_coeff: Coeffs | dict[str, Coeffs] | None = Field(
        default=None,
        description="sparsity coefficients: a list, {log_space: [lo, hi], num: N}, or either per mode "
        "({local: [...], e2e: [...]}); null: a target search places them",
    )
    seed: list[int] = Field(default=[0], min_length=1, description="seeds (SAE initialisation and data order)")
    architecture: list[Architecture] | None = Field(
        default=None,
        min_length=1,
        description="SAE architectures (docs/architectures.md); relu and jumprelu take sparsity_coeff, the topk "
        "family (topk, batchtopk, matryoshka_batchtopk) takes k; default the base's sae.architecture",
    )
    k: list[int] | None = Field(
        default=None,
        min_length=1,
        description="the topk family's sparsity knob: active dictionary elements per token (sae.k), in place of "
        "sparsity_coeff for those architectures",
    )
    target_l0: list[float] | None = Field(
        default=None,
        min_length=1,
        description="jumprelu: target L0s (loss.sparsity.target_l0, the quadratic penalty around it, Gemma Scope 2), "
        "a grid beside sparsity_coeff (then the penalty's weight); in short runs it sets L0 where the coefficient "
        "barely moves it (docs/science.md)",
    )

    @model_validator(mode="after")
    def _check(self) -> Axes:
        if self.sparsity_coeff is None:
            coeffs = []
        elif isinstance(self.sparsity_coeff, dict):
            unknown = set(self.sparsity_coeff) - set(MODES)
            if unknown:
                raise ValueError(f"sparsity_coeff: unknown mode(s) {sorted(unknown)}; use {', '.join(MODES)}")
            coeffs = [_coeff_values(c) for c in self.sparsity_coeff.values()]
        else:
            coeffs = [_coeff_values(self.sparsity_coeff)]
        if any(len(c) == 0 for c in coeffs):
            raise ValueError("sparsity_coeff: empty list; give at least one coefficient")
        if any(x < 0 for c in coeffs for x in c):
            raise ValueError("sparsity_coeff: coefficients must be >= 0")
        if self.dict_size_to_input_ratio and any(r <= 0 for r in self.dict_size_to_input_ratio):
            raise ValueError("dict_size_to_input_ratio: ratios must be > 0")
        if self.layer and any(layer < 0 for layer in self.layer):
            raise ValueError("layer: layers must be >= 0")
        if self.k and any(k < 1 for k in self.k):
            raise ValueError("k: active elements per token must be >= 1")
        if self.target_l0 and any(not t > 0 for t in self.target_l0):
            raise ValueError("target_l0: target L0s must be > 0")
        return self

    def coeffs_for(self, mode: str) -> list[float]:
        c = self.sparsity_coeff
        if c is None:
            raise ValueError("axes.sparsity_coeff is not set: a target search places the coefficients")
        return _coeff_values(c[mode] if isinstance(c, dict) else c)

    def has_grid_for(self, mode: str) -> bool:
        c = self.sparsity_coeff
        return c is not None and (not isinstance(c, dict) or mode in c)


class Search(_Strict):
    """``kind: grid`` (default): the axes' coefficient grid. ``kind: targets``: along each curve (the
    trials of one mode, layer, dict ratio and seed), coefficients placed by the target search
    (:mod:`sweeps.planning.curve_search`) until every target is met within ``tolerance``
    (|log(achieved / target)|) or ``max_trials_per_curve`` trials have started."""

    kind: Literal["grid", "targets"] = Field(
        default="grid",
        description="grid: the axes' coefficients; targets: the search places them toward targets (`frontier`, "
        "its name before, is read as targets)",
    )
    targets: dict[str, list[float]] | None = Field(
        default=None, description="one metric and its levels: {l0: [...]} or {ce_loss_increase: [...]}"
    )
    tolerance: float = Field(default=0.15, description="|log(achieved / target)| that counts as met")
    max_trials_per_curve: int | None = Field(
        default=None,
        description="trials the search may start per curve; default twice the number of targets "
        "(`max_trials_per_group`, its name before, is read as this)",
    )
    start: dict[str, float] = Field(
        default={},
        description="first coefficient per mode; default: scaled to each layer's measured activation norm (1.0 with "
        "sae.input_normalization; docs/sweeps.md)",
    )
    start_k: dict[str, int] = Field(
        default={}, description="first k per mode for the topk family (default the base's sae.k, else 32)"
    )

    @property
    def metric(self) -> str:
        return next(iter(self.targets or {"l0": []}))

    @property
    def target_values(self) -> list[float]:
        return sorted((self.targets or {}).get(self.metric, []))

    @property
    def budget(self) -> int:
        return self.max_trials_per_curve or 2 * len(self.target_values)


def check_knobs(spec: SweepSpec) -> None:
    """Each architecture's sparsity knob where it belongs: ``sparsity_coeff`` for relu and jumprelu,
    ``k`` for the topk family (a grid; the target search places coefficients only)."""
    archs, axes = spec.architectures, spec.axes
    topk = [a for a in archs if a in TOPK_FAMILY]
    penalised = [a for a in archs if a in PENALISED]
    if axes.k is not None and not topk:
        raise ConfigError(
            f"axes.k: only the topk family ({', '.join(TOPK_FAMILY)}) takes k, and this sweep trains {archs}; "
            "drop axes.k or add such an architecture to axes.architecture"
        )
    if axes.target_l0 is not None and "jumprelu" not in archs:
        raise ConfigError(
            f"axes.target_l0: only jumprelu takes a target L0, and this sweep trains {archs}; drop axes.target_l0 "
            "or add jumprelu to axes.architecture"
        )
    if axes.target_l0 is not None and spec.search.kind == "targets":
        raise ConfigError("axes.target_l0: a grid, and search.kind: targets places the coefficient; drop one of them")
    if axes.sparsity_coeff is not None and not penalised:
        raise ConfigError(
            f"axes.sparsity_coeff: {archs} set L0 by k and take no coefficient; drop axes.sparsity_coeff (give axes.k)"
        )
    if spec.search.kind == "targets":
        if topk and axes.k is not None:
            raise ConfigError(
                f"axes.k: both a k grid and search.kind: targets for {topk}; remove axes.k (search.start_k sets "
                "the first k)"
            )
        # A first guess the sweep would not use is refused, not ignored: the user expects it to act.
        if spec.search.start_k and not topk:
            raise ConfigError(
                f"search.start_k: only the topk family ({', '.join(TOPK_FAMILY)}) takes k, and this sweep trains "
                f"{archs}; drop search.start_k (search.start sets the first coefficient)"
            )
        if spec.search.start and not penalised:
            raise ConfigError(
                f"search.start: {archs} set L0 by k and take no coefficient; drop search.start (search.start_k sets "
                "the first k)"
            )
        bad = {m: v for m, v in spec.search.start_k.items() if v < 1}
        if bad or set(spec.search.start_k) - set(axes.mode):
            raise ConfigError(
                f"search.start_k: give k >= 1 for modes among {list(axes.mode)}, got {spec.search.start_k}"
            )
        return
    if topk and axes.k is None and spec.base_run_field("sae", "k") is None:
        raise ConfigError(f"axes.k: missing; {topk} need k (active elements per token), e.g. k: [16, 32, 64]")


def check_search(spec: SweepSpec) -> None:
    """One-line errors for a search block, or sparsity knobs, that cannot work (raised before any compute)."""
    search, axes = spec.search, spec.axes
    check_knobs(spec)
    if search.kind == "grid":
        if search.targets is not None:
            raise ConfigError(
                "search.targets: only a target search has targets; set search.kind: targets or remove them"
            )
        for name in ("start", "start_k"):  # a first guess a grid would ignore
            if getattr(search, name):
                raise ConfigError(
                    f"search.{name}: only a target search starts from it; set search.kind: targets or remove it"
                )
        if not any(a in PENALISED for a in spec.architectures):
            return  # the topk family: check_knobs checked k
        if axes.sparsity_coeff is None:
            raise ConfigError(
                "axes.sparsity_coeff: missing; give coefficients per mode, or use "
                "search: {kind: targets, targets: ...} to have them placed"
            )
        missing = [m for m in axes.mode if not axes.has_grid_for(m)]
        if missing:
            raise ConfigError(f"axes: sparsity_coeff: no coefficients for mode(s) {missing}; add them")
        return
    if not search.targets:
        raise ConfigError(
            "search.targets: a target search needs targets, e.g. {l0: [20, 40, 80]} or {ce_loss_increase: [0.2, 0.4]}"
        )
    if len(search.targets) > 1:
        raise ConfigError(f"search.targets: one metric per search, got {sorted(search.targets)}; keep one of them")
    metric = search.metric
    if metric not in SEARCH_METRICS:
        raise ConfigError(f"search.targets: unknown metric {metric!r}; use one of {', '.join(SEARCH_METRICS)}")
    values = search.targets[metric]
    if not values:
        raise ConfigError(f"search.targets.{metric}: empty; give at least one target value")
    if any(not (v > 0) or not math.isfinite(v) for v in values):
        raise ConfigError(f"search.targets.{metric}: targets must be finite and > 0, got {values}")
    if len(set(values)) != len(values):
        raise ConfigError(f"search.targets.{metric}: repeated target in {values}; list each once")
    if not search.tolerance > 0:
        raise ConfigError(
            f"search.tolerance: must be > 0 (|log(achieved / target)|, e.g. 0.15), got {search.tolerance}"
        )
    if search.budget < len(values):
        raise ConfigError(
            f"search.max_trials_per_curve: {search.budget} is fewer than the {len(values)} targets; "
            f"raise it to at least {len(values)} (about 2 per target)"
        )
    grid = [m for m in axes.mode if axes.has_grid_for(m)]
    if grid:
        raise ConfigError(
            f"axes.sparsity_coeff: both a coefficient grid and search.kind: targets for mode(s) "
            f"{grid}; remove axes.sparsity_coeff (use search.start for first guesses)"
        )
    unknown = sorted(set(search.start) - set(axes.mode))
    if unknown:
        raise ConfigError(f"search.start: mode(s) {unknown} are not in axes.mode; remove them")
    bad = {m: v for m, v in search.start.items() if not v > 0}
    if bad:
        raise ConfigError(f"search.start: coefficients must be > 0, got {bad}")


class Resources(_Strict):
    cpu: float = Field(default=1.0, gt=0, description="CPUs per Tune trial (torch threads follow it)")
    gpu: float = Field(default=0.0, ge=0, le=1, description="GPUs per Tune trial; fractions pack several on one GPU")


class SweepWandb(_Strict):
    project: str = Field(default="e2e-sae", description="W&B project; each trial is a run in the sweep's group")
    entity: str | None = Field(default=None, description="W&B entity (user or team)")
    mode: Literal["online", "offline", "disabled"] = Field(
        default="disabled", description="online | offline | disabled; the API key comes from WANDB_API_KEY"
    )


class ReportOptions(_Strict):
    """``match_at``: CE-loss increase levels for matched comparisons, besides the automatic one."""

    match_at: list[float] = Field(
        default=[],
        description="CE-loss increase levels for matched comparisons, besides the automatic one; report.md leads "
        "each hook with them (and a target search's CE targets)",
    )

    @field_validator("match_at")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(not x > 0 for x in v):
            raise ValueError("CE-loss increase levels must be > 0")
        return sorted(v)


class SweepSpec(_Strict):
    name: str = Field(description="the experiment's name: its directory under storage_path")
    base: Path | None = Field(default=None, description="the base run config file (relative to the sweep file)")
    run: dict[str, Any] | None = Field(default=None, description="the base run config inline (instead of base)")
    overrides: dict[str, Any] = Field(
        default={}, description="run-config fields set for every trial, dotted or nested (overrides.train.n_samples)"
    )
    axes: Axes = Field(description="the values each trial takes; trials are their product")
    resources_per_trial: Resources = Field(default=Resources(), description="what Tune reserves per Tune trial")
    max_concurrent_trials: int | None = Field(
        default=None, ge=1, description="Tune trials at once; default as many as the resources allow"
    )
    storage_path: str = Field(
        default="./sweeps_results", description="where the experiment is written: a path, s3://... or gs://..."
    )
    storage_shared: bool = Field(
        default=False,
        description="state that a local storage_path is a filesystem every node mounts at the same path (NFS, "
        "EFS, Filestore); without it a local path on a cluster of several nodes is refused "
        "(sweeps/running/placement.py)",
    )
    checkpoint_every_n_samples: int | None = Field(
        default=None, gt=0, description="sets train.checkpoint_every_n_samples in every trial"
    )
    eval_every_n_samples: int | None = Field(
        default=None, gt=0, description="sets train.eval_every_n_samples in every trial"
    )
    max_failures: int = Field(default=3, ge=0, description="times Tune retries a failed trial from its checkpoint")
    checkpoints_per_trial: int = Field(
        default=3,
        ge=1,
        description="checkpoints each trial keeps in storage; a resume after a driver crash restores the one in "
        "Tune's last experiment snapshot, so keep enough to cover those written since",
    )
    group_size: int = Field(
        default=1,
        description="up to this many trials differing only in seed, dict ratio, coefficient, k or lr train as one "
        "Tune trial on one clean forward pass (sweeps/running/grouped_trial.py); 1: one SAE per Tune trial",
    )
    search: Search = Field(default=Search(), description="how the sparsity coefficients are chosen")
    report: ReportOptions = Field(default=ReportOptions(), description="options of the Pareto report")
    wandb: SweepWandb = Field(default=SweepWandb(), description="Weights & Biases logging of the trials")
    finetune: list[FinetuneStage] = Field(
        default=[],
        description="fine-tune stages: each finished trial of a stage starts fine-tunes of itself "
        "(sweeps/planning/finetune_stage.py, docs/finetune.md)",
    )
    _base_run: dict[str, Any] | None = PrivateAttr(default=None)  # the base run config, read once

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", v):
            raise ValueError("use letters, digits and _ . + - only (it names the experiment directory)")
        return v

    @field_validator("group_size")
    @classmethod
    def _group_size(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}; use 1 for one SAE per trial or K > 1 to train up to K per trial")
        return v

    @model_validator(mode="after")
    def _one_base(self) -> SweepSpec:
        if (self.base is None) == (self.run is None):
            raise ValueError("set exactly one of base (a run config path) or run (an inline run config)")
        return self

    @property
    def architectures(self) -> list[str]:
        """The architectures the sweep trains: its axis, or the base's (with the overrides)."""
        if self.axes.architecture:
            return list(self.axes.architecture)
        return [self.base_run_field("sae", "architecture") or "relu"]

    def base_run_field(self, *keys: str) -> Any:
        """A field of the base run config with the sweep's overrides applied (None where unset)."""
        d: Any = apply_overrides(base_run_dict(self), self.overrides)
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d

    @property
    def experiment_path(self) -> str:
        """Where Tune writes the experiment: ``<storage_path>/<name>`` (local paths made absolute)."""
        return experiment_path(self.storage_path, self.name)


# ---- loading and expansion -----------------------------------------------------------------------


def load_sweep(path: str | Path, set_items: list[str] | None = None) -> SweepSpec:
    """Read, override (``--set key=value`` on the sweep file) and validate a sweep file."""
    raw = read_yaml_mapping(path, "sweep")
    return sweep_from_dict(raw, parse_overrides(set_items), base_dir=Path(path).parent)


def sweep_from_dict(
    raw: dict[str, Any], overrides: dict[str, Any] | None = None, base_dir: Path | None = None
) -> SweepSpec:
    raw = _with_current_names(apply_overrides(raw, overrides))
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_run_field_hint(err, overrides or {}) or format_validation_error(err)) from None
    spec.overrides = flatten_dotted(spec.overrides)
    if spec.base is not None and not spec.base.is_absolute() and not spec.base.is_file() and base_dir is not None:
        # relative to the current directory first (the README's commands), then to the sweep file
        candidate = base_dir / spec.base
        if candidate.is_file():
            spec.base = candidate
    check_search(spec)
    check_stages(spec.finetune, list(spec.axes.mode))
    return spec


# What ``sweeps run`` writes into sweep.yaml beside the spec (:meth:`sweeps.planning.plan.Plan.saved_text`):
# the model's label for the report, and the trial count (``n_groups`` in experiments saved before the
# target search's curves were named so).
SAVED_FACTS = ("model", "n_trials", "n_curves", "n_groups", "max_trials")


@dataclass
class SavedSweep:
    """An experiment's sweep.yaml: the spec ``run`` validated, and the model it names."""

    spec: SweepSpec
    model: str | None


def read_saved_sweep(exp_path: str, shown: str | None = None) -> SavedSweep:
    """The sweep ``run`` saved in an experiment, typed; ``shown`` names the experiment in errors."""
    raw = read_sweep_file(exp_path, shown)
    facts = {k: raw.pop(k) for k in SAVED_FACTS if k in raw}
    try:
        spec = sweep_from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"{shown or exp_path}: its sweep.yaml: {err}") from None
    return SavedSweep(spec, model_label(facts.get("model")))


def _with_current_names(raw: dict[str, Any]) -> dict[str, Any]:
    """A sweep file (or an experiment's saved sweep.yaml) written before a rename, in today's names:
    ``keep_checkpoints`` -> ``checkpoints_per_trial``; the frontier search is the target search
    (``search.kind: frontier`` -> ``targets``, ``max_trials_per_group`` -> ``max_trials_per_curve``)."""
    if "keep_checkpoints" in raw and "checkpoints_per_trial" not in raw:
        raw["checkpoints_per_trial"] = raw.pop("keep_checkpoints")
    search = raw.get("search")
    if isinstance(search, dict):
        if search.get("kind") == "frontier":
            search["kind"] = "targets"
        if "max_trials_per_group" in search and "max_trials_per_curve" not in search:
            search["max_trials_per_curve"] = search.pop("max_trials_per_group")
    return raw


def _run_field_hint(err: ValidationError, overrides: dict[str, Any]) -> str | None:
    """For a key the sweep file does not know but a run config does (``--set train.n_samples=600``, or
    ``train:`` at the top of a sweep file): one line naming the ``overrides.`` form that sets it for
    every trial. None when no such key is among the errors."""
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        if e["type"] != "extra_forbidden" or not _is_run_field(loc):
            continue
        field = ".".join(loc)
        given = [(k, v) for k, v in overrides.items() if k == field or k.startswith(field + ".")]
        if given:
            key, value = given[0]
            shown = value if isinstance(value, str) else json.dumps(value)
            return (
                f"--set {key}={shown}: {field} is a run-config field, not a sweep-file one; set it for every "
                f"trial with --set overrides.{key}={shown}"
            )
        return (
            f"{field}: a run-config field, not a sweep-file one; set it for every trial under overrides: "
            f"(overrides: {{{field}...: value}}, dotted keys) or in the base run config"
        )
    return None


def _is_run_field(path: tuple[str, ...]) -> bool:
    """Whether ``path`` (``("train", "n_samples")``) names a field of a run config."""
    model: Any = RunConfig
    for key in path:
        fields = getattr(model, "model_fields", None)
        if fields is None or key not in fields:
            return False
        annotation = fields[key].annotation
        options = [annotation, *typing.get_args(annotation)]
        model = next((m for m in options if isinstance(m, type) and issubclass(m, BaseModel)), None)
    return True


def base_run_dict(spec: SweepSpec) -> dict[str, Any]:
    """The base run config (inline ``run`` or the ``base`` file, read on first use only); a copy."""
    if spec._base_run is None:
        if spec.run is not None:
            spec._base_run = spec.run
        elif spec.base is None:
            raise ConfigError("set base: (a run config file) or run: (the run config inline)")
        else:
            try:
                spec._base_run = read_yaml_mapping(spec.base)
            except ConfigError as err:
                raise ConfigError(f"base: {err}") from None
    return copy.deepcopy(spec._base_run)


def expand_trials(spec: SweepSpec) -> list[Trial]:
    """One planned trial per point of the axes, with its full run config. For a target search: one per
    curve, its coefficient the search's start (the template each proposal fills)."""
    if spec.search.kind == "targets":
        first_k = spec.base_run_field("sae", "k") or DEFAULT_START_K
        return _expand(
            spec, lambda mode: [spec.search.start.get(mode, 1.0)], lambda mode: [spec.search.start_k.get(mode, first_k)]
        )
    return _expand(spec, spec.axes.coeffs_for, lambda mode: spec.axes.k or [spec.base_run_field("sae", "k")])


def _expand(spec: SweepSpec, coeffs_for, ks_for) -> list[Trial]:
    base = base_run_dict(spec)
    ax = spec.axes
    # Set on every trial after its axis values (W&B logging is Tune's callback, not the trial's).
    fixed: dict[str, Any] = {"wandb.mode": "disabled"}
    if spec.checkpoint_every_n_samples is not None:
        fixed["train.checkpoint_every_n_samples"] = spec.checkpoint_every_n_samples
    if spec.eval_every_n_samples is not None:
        fixed["train.eval_every_n_samples"] = spec.eval_every_n_samples
    trials = []
    layers: list[int | None] = list(ax.layer) if ax.layer else [None]  # None: the base's position
    ratios: list[float | None] = list(ax.dict_size_to_input_ratio) if ax.dict_size_to_input_ratio else [None]
    for mode, arch in itertools.product(ax.mode, spec.architectures):
        knobs = _knobs(arch, coeffs_for(mode) if arch in PENALISED else ks_for(mode), ax.target_l0)
        for layer, ratio, knob, seed in itertools.product(layers, ratios, knobs, ax.seed):
            dotted = {**spec.overrides, "mode": mode, "seed": seed, **knob}
            if ax.architecture:
                dotted["sae.architecture"] = arch
            if layer is not None:
                dotted["sae.position"] = resid_pre(layer)
            if ratio is not None:
                dotted["sae.dict_size_to_input_ratio"] = ratio
            run = apply_overrides(base, {**dotted, **fixed})
            trials.append(Trial(run=run))
    return trials


def _knobs(arch: str, values: list[Any], target_l0: list[float] | None = None) -> list[dict[str, Any]]:
    """A trial's sparsity knob, per value: the coefficient (relu, jumprelu; for jumprelu with target
    L0s, each coefficient with each target), or k and no sparsity term (the topk family)."""
    if arch == "jumprelu" and target_l0:
        return [{"loss.sparsity.coeff": c, "loss.sparsity.target_l0": t} for c in values for t in target_l0]
    if arch in PENALISED:
        return [{"loss.sparsity.coeff": c} for c in values]
    return [{"sae.k": k, "loss.sparsity": None} for k in values]


def config_diff(base: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys whose value in ``run`` differs from ``base``."""
    fb, fr = flatten_dotted(base), flatten_dotted(run)
    return {k: v for k, v in fr.items() if fb.get(k, object()) != v}
