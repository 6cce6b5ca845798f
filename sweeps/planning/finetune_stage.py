"""A sweep's fine-tune stages: each finished trial of a stage is the parent of one fine-tune per mode
and length the stage names, started as soon as that parent finishes (Karvonen 2025: a local SAE's
last few percent of samples trained with KL + MSE recovers most of e2e training's CE-loss gain).

    finetune:
      - name: kl                       # names the stage's trials: <parent>_kl_e2e_5pct
        from: main                     # parents: the axes' trials (main) or an earlier stage's
        parent_modes: [local]          # parents of these modes only (default: all of that stage's)
        modes: [e2e]                   # each child's losses: a mode's preset ...
        keep_mse: true                 # ... with the MSE at the SAE kept on and the KL balanced to it
        fractions: [0.05, 0.1, 0.25]   # each child's length, as a fraction of its parent's samples

This module makes the children's Tune configs from a finished parent's (Ray-free: the searcher that
starts them is :mod:`sweeps.running.stages`), and the lines ``plan`` and ``status`` print.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from e2e_sae.config import (
    ConfigError,
    Mode,
    TrainConfig,
    apply_overrides,
    finetune_samples,
    flatten_dotted,
    longer_than_parent,
)
from sweeps.planning.names import finetune_name
from sweeps.planning.trial import Trial, is_group, members_of

MAIN_STAGE = "main"  # the axes' trials, as a stage's ``from`` names them
TRIAL_SETS_PARENT = "set by the trial: the parent's last checkpoint"  # finetune.parent until the trial runs


class FinetuneStage(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(description="the stage's name, in its trials' names (<parent>_<name>_<mode>_<pct>pct)")
    from_stage: str = Field(
        default=MAIN_STAGE,
        alias="from",
        description="whose finished trials are the parents: main (the axes' trials) or an earlier stage's name",
    )
    parent_modes: list[Mode] | None = Field(
        default=None, description="fine-tune parents of these modes only; default every mode of that stage"
    )
    modes: list[Mode] = Field(min_length=1, description="each child's losses: the mode's preset (e2e, e2e+ds, local)")
    fractions: list[float] = Field(
        min_length=1,
        description="each child's length as a fraction of the samples its parent trains on (whole steps), in (0, 1]",
    )
    keep_mse: bool = Field(
        default=True,
        description="keep the MSE at the SAE on (coefficient 1) beside a mode's KL and weigh the KL by MSE / KL "
        "(loss.balance_kl_to_mse), so the parent's sparsity coefficient carries over (Karvonen 2025)",
    )
    parents: Literal["all", "frontier"] = Field(
        default="all",
        description="all: every finished trial of the from stage, each fine-tuned as it finishes; frontier: only "
        "those on their curve's (L0, CE-loss increase) Pareto frontier as the report draws it (degenerate trials "
        "left off), fine-tuned once every main trial has ended (again after a resume re-runs one; from: main only)",
    )
    optimizer_state: bool = Field(default=False, description="start each child from its parent's Adam moments too")
    warmup_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="each child's linear warm-up, as a fraction of its own samples"
    )
    overrides: dict[str, Any] = Field(default={}, description="run-config fields set in every child (dotted keys)")

    @field_validator("name")
    @classmethod
    def _safe(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", v) or v == MAIN_STAGE:
            raise ValueError(f"use letters, digits and _ . + - only, and not {MAIN_STAGE!r} (it names the trials)")
        return v

    @field_validator("fractions")
    @classmethod
    def _lengths(cls, v: list[float]) -> list[float]:
        bad = [f for f in v if not 0 < f <= 1]
        if bad:
            raise ValueError(
                f"{bad}: a fine-tune is a fraction in (0, 1] of its parent's samples (0 trains nothing; above 1 "
                "is longer than the parent); e.g. [0.05, 0.1, 0.25]"
            )
        return sorted(set(v))

    def takes(self, parent: Trial) -> bool:
        """Whether a trial of the ``from`` stage is one of this stage's parents (by its mode)."""
        return self.parent_modes is None or parent.mode in self.parent_modes

    def children_of(self, parent: Trial, parent_trial: str) -> list[dict[str, Any]]:
        """``parent``'s children in this stage, one per mode and fraction (none if it takes no such parent)."""
        if not self.takes(parent):
            return []
        return [child_config(parent, parent_trial, self, m, f) for m in self.modes for f in self.fractions]


def check_stages(stages: list[FinetuneStage], main_modes: list[str]) -> None:
    """Stage names unique, each ``from`` an earlier stage (or main), its parent modes ones that stage
    trains: a one-line ConfigError naming the field otherwise."""
    modes_of: dict[str, list[str]] = {MAIN_STAGE: list(main_modes)}
    for i, stage in enumerate(stages):
        where = f"finetune.{i}"
        if stage.name in modes_of:
            raise ConfigError(f"{where}.name: {stage.name!r} names two stages; give each stage its own name")
        if stage.from_stage not in modes_of:
            raise ConfigError(
                f"{where}.from: no stage {stage.from_stage!r} before this one; use one of {sorted(modes_of)}"
            )
        if stage.parents == "frontier" and stage.from_stage != MAIN_STAGE:
            raise ConfigError(
                f"{where}.parents: frontier picks among the main trials once they have all finished; use it with "
                f"from: {MAIN_STAGE}, or parents: all"
            )
        unknown = sorted(set(stage.parent_modes or []) - set(modes_of[stage.from_stage]))
        if unknown:
            raise ConfigError(
                f"{where}.parent_modes: {unknown} are not trained by stage {stage.from_stage!r} (its modes: "
                f"{modes_of[stage.from_stage]}); remove them"
            )
        modes_of[stage.name] = list(stage.modes)


def stage_of(config: dict[str, Any]) -> str:
    """The stage a Tune trial config belongs to: its fine-tune's stage, else main."""
    finetune = config.get("finetune")
    return finetune["stage"] if isinstance(finetune, dict) else MAIN_STAGE


def child_config(parent: Trial, parent_trial: str, stage: FinetuneStage, mode: str, fraction: float) -> dict[str, Any]:
    """One child's Tune config: the parent's run config with ``mode``'s losses (its sparsity term
    kept), ``fraction`` of the parent's samples, the stage's overrides, and ``finetune.parent`` filled
    in by the trial (it fetches the parent's last checkpoint from the experiment's storage).
    ``parent_trial``: the parent's Tune trial directory (its group's, for a grouped member)."""
    run = copy.deepcopy(parent.planned_run)
    n_samples = finetune_samples(fraction, trained_samples(run))
    loss = {k: v for k, v in (run.get("loss") or {}).items() if k == "sparsity"}  # the mode preset fills the rest
    if stage.keep_mse and mode != "local":
        loss.update(out_to_in={"coeff": 1.0}, balance_kl_to_mse=True)
    dotted = {
        "mode": mode,
        "loss": loss,
        "train.n_samples": n_samples,
        "train.warmup_samples": round(stage.warmup_fraction * n_samples),
        "finetune": {"parent": TRIAL_SETS_PARENT, "optimizer_state": stage.optimizer_state},
        **flatten_dotted(stage.overrides),
    }
    run = apply_overrides(run, dotted)
    finetune = {
        "stage": stage.name,
        "parent": parent.name,
        "parent_trial": parent_trial,
        "member": parent.member,
        "parent_mode": parent.series,
        "fraction": fraction,
    }
    return {"run": run, "finetune": finetune}


def trained_samples(run: dict[str, Any]) -> int:
    """The samples a planned run trains on (whole steps, :attr:`e2e_sae.config.TrainConfig.trained_samples`):
    what its children's fractions are of, and what none of them may exceed."""
    return TrainConfig.model_validate(run["train"]).trained_samples


def parents_of(config: dict[str, Any], finished: set[str] | None = None) -> list[Trial]:
    """The trials a finished Tune trial trained: itself, or a grouped one's members in ``finished``
    (the members that ended with a final row; None: all)."""
    if not is_group(config):
        return [Trial.from_config(config)]
    parents = []
    for name, member in members_of(config):
        if finished is None or name in finished:
            trial = Trial.from_config(member)
            trial.member = name
            parents.append(trial)
    return parents


def children(
    stages: list[FinetuneStage], config: dict[str, Any], parent_trial: str, finished: set[str] | None = None
) -> list[dict[str, Any]]:
    """The children of a finished Tune trial (its config, its trial directory's name) in the stages
    with ``parents: all``, which fine-tune every finished trial as it finishes (``parents: frontier``
    stages wait for every main trial: :func:`frontier_children`)."""
    out = []
    for s in stages:
        if s.from_stage != stage_of(config) or s.parents != "all":
            continue
        for parent in parents_of(config, finished):
            out += s.children_of(parent, parent_trial)
    return out


def frontier_children(stages: list[FinetuneStage], finished: list[tuple[Trial, str]]) -> list[dict[str, Any]]:
    """The children of ``parents: frontier`` stages, once every main trial has finished: ``finished``
    holds each finished main trial (its metrics set) and its Tune trial directory; of each curve (mode,
    architecture, hook, ratio, seed), only the trials on its (L0, CE-loss increase) Pareto frontier are
    parents."""
    on_front = on_curve_frontiers(finished)
    out = []
    for s in stages:
        if s.parents != "frontier":
            continue
        for parent, trial_dir in on_front:
            out += s.children_of(parent, trial_dir)
    return out


def on_curve_frontiers(finished: list[tuple[Trial, Any]]) -> list[tuple[Trial, Any]]:
    """The (trial, tag) pairs whose trial lies on its curve's frontier (a curve: one mode, architecture,
    hook, ratio and seed) as the report draws it (:func:`sweeps.frontier.drawn_front`: (L0,
    CE-loss increase), degenerate trials left off), so no SAE the report calls barely better than zero
    ablation is fine-tuned."""
    from sweeps.frontier import drawn_front

    curves: dict[tuple, list[Trial]] = {}
    tags: dict[int, Any] = {}
    for trial, tag in finished:
        key = (trial.mode, trial.architecture, trial.hook, trial.dict_size_to_input_ratio, trial.seed)
        curves.setdefault(key, []).append(trial)
        tags[id(trial)] = tag
    return [(p.payload, tags[id(p.payload)]) for trials in curves.values() for p in drawn_front(trials)]


def children_per_parent(stages: list[FinetuneStage]) -> int:
    """At most how many trials one main-stage trial leads to through every stage (chained ones too)."""
    per: dict[str, int] = {MAIN_STAGE: 1}
    for s in stages:
        per[s.name] = per[s.from_stage] * len(s.modes) * len(s.fractions)
    return sum(n for name, n in per.items() if name != MAIN_STAGE)


def plan_lines(stages: list[FinetuneStage]) -> list[str]:
    """What ``plan`` prints of the stages."""
    lines = []
    for s in stages:
        parents = f"{s.from_stage} trial" + (f" of mode {', '.join(s.parent_modes)}" if s.parent_modes else "")
        if s.parents == "frontier":
            parents += " on its curve's frontier (picked once every main trial has ended)"
        losses = " with the MSE kept and KL balanced to it" if s.keep_mse else ""
        lengths = ", ".join(f"{f * 100:g}%" for f in s.fractions)
        lines.append(
            f"fine-tune stage {s.name}: each finished {parents} -> {', '.join(s.modes)}{losses}, for {lengths} "
            f"of its samples ({len(s.modes) * len(s.fractions)} children each, started as it finishes)"
        )
    return lines


def status_lines(stages: list[FinetuneStage], trials: list[Trial]) -> list[str]:
    """Parents and children per stage: each finished parent's children by state, and the children a
    parent that errored will never have (skipped, with the parent's error)."""
    by_parent: dict[str, list[Trial]] = {}
    for t in trials:
        if t.finetune is not None:
            by_parent.setdefault(t.finetune["parent"], []).append(t)
    lines = []
    for s in stages:
        parents = [t for t in trials if (t.finetune or {}).get("stage", MAIN_STAGE) == s.from_stage and s.takes(t)]
        lines.append(f"fine-tune stage {s.name} (from {s.from_stage}, parents: {s.parents}):")
        done = all(t.state in ("finished", "errored") for t in parents)
        front = set()
        if s.parents == "frontier":
            front = {t.name for t, _ in on_curve_frontiers([(t, None) for t in parents if t.state == "finished"])}
        for p in sorted(parents, key=lambda t: t.name):
            kids = [c for c in by_parent.get(p.name, []) if c.finetune and c.finetune["stage"] == s.name]
            if p.state == "errored":
                names = [child_name(p, s, m, f) for m in s.modes for f in s.fractions]
                lines.append(f"  {p.name}: errored -> skipped {', '.join(names)} (parent error: {p.error})")
            elif s.parents == "frontier" and not kids and done and p.name not in front:
                lines.append(f"  {p.name}: {p.state}, {_off_frontier(p)} -> no children")
            elif s.parents == "frontier" and not kids:
                lines.append(
                    f"  {p.name}: {p.state} -> children start once every main trial has ended, if on its frontier"
                )
            elif not kids:
                lines.append(f"  {p.name}: {p.state} -> children start when it finishes")
            else:
                states = ", ".join(f"{c.name} {c.state}" for c in sorted(kids, key=lambda c: c.name))
                moved = s.parents == "frontier" and done and p.name not in front  # a resumed trial outdid it
                lines.append(f"  {p.name}: {p.state}{', no longer on its frontier' if moved else ''} -> {states}")
    return lines


def _off_frontier(trial: Trial) -> str:
    """Why a finished trial is not a frontier stage's parent: degenerate (the report's rule), or dominated."""
    from sweeps.frontier import degenerate_reason

    reason = degenerate_reason(trial.metrics)
    return f"degenerate ({reason}), off every frontier" if reason else "not on its curve's frontier"


def child_name(parent: Trial, stage: FinetuneStage, mode: str, fraction: float) -> str:
    return finetune_name(parent.name, stage.name, mode, fraction)


def check_children(stages: list[FinetuneStage], trials: list[Trial]) -> None:
    """Every stage's children of the planned trials (and of those children, for chained stages)
    validated as run configs before any compute: a stage's overrides that break a run config, move it
    off its parent's hook or dictionary size, or make it train longer than its parent are one line
    naming the stage."""
    made: dict[str, list[Trial]] = {MAIN_STAGE: trials}
    for i, s in enumerate(stages):
        kids = []
        for parent in made[s.from_stage]:
            for config in s.children_of(parent, "planned"):
                kid = Trial.from_config(config)
                _check_child(f"finetune.{i}", s, parent, kid)
                kids.append(kid)
        made[s.name] = kids


def _check_child(where: str, stage: FinetuneStage, parent: Trial, kid: Trial) -> None:
    """One planned child against its parent: the run the trial will start, checked as the library
    checks it (:func:`e2e_sae.config.longer_than_parent`), without the parent's checkpoint."""
    from e2e_sae.config import run_config_from_dict

    moved = [
        field
        for field, mine, parents in (
            ("sae.position", kid.hook, parent.hook),
            ("sae.dict_size_to_input_ratio", kid.dict_size_to_input_ratio, parent.dict_size_to_input_ratio),
        )
        if mine != parents
    ]
    if moved:
        raise ConfigError(
            f"{where}.overrides: sets {moved[0]}, but a fine-tune keeps its parent's hook and dictionary size; "
            f"remove {moved[0]}"
        )
    try:
        cfg = run_config_from_dict(kid.planned_run)
    except ConfigError as err:
        raise ConfigError(f"{where} ({stage.name}): child {kid.name}: {err}") from None
    too_long = longer_than_parent(cfg.train, trained_samples(parent.planned_run))
    if too_long is not None:  # a fraction <= 1 never is: only train.* overrides make a child this long
        raise ConfigError(
            f"{where}.overrides: child {kid.name}: {too_long}; drop or lower the train.* overrides (n_samples, "
            "batch_size, effective_batch_size) so each child trains at most its parent's samples"
        )
