"""Grouped runs: K member SAEs at one hook trained in one process on one clean forward pass.

Members of a group share the model, hook, mode, data (and its order), batch sizes and schedule
shape; they may differ only in :data:`MEMBER_FIELDS` (sparsity coefficient, dictionary ratio, seed,
learning rate, the topk family's k, JumpReLU's target L0). A step: one clean pass (SAE input, clean
logits, downstream targets) -> each member's SAE -> the K spliced suffixes, stacked along the batch
dimension in one ``start_at_layer`` pass (``splice: stacked``) or one after another (``loop``) ->
per-member losses -> one backward of their sum (members are independent, so each SAE gets exactly its
own gradient).

Each member is a run of its own (:class:`e2e_sae.loop.Run`): its own ``output_dir``
(``<group output_dir>/<member name>``), optimizer, schedule, activation-frequency window,
``metrics.jsonl``/``metrics.json``, checkpoints and W&B run; its ``config.yaml`` trains the same SAE
as a separate run. A member whose loss turns non-finite stops alone (``diverged.txt`` in its
directory); the others go on.

YAML: a run config plus a ``group:`` section (README, "Grouped runs")::

    group:
      splice: auto          # auto | stacked | loop
      members:
        - {name: c0.5, set: {loss.sparsity.coeff: 0.5}}
        - {name: c2, set: {loss.sparsity.coeff: 2.0, seed: 1}}
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import Field, ValidationError

from e2e_sae.checkpoint import list_checkpoints
from e2e_sae.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    flatten_dotted,
    format_validation_error,
    run_config_from_dict,
)
from e2e_sae.loop import Reporter, Run
from e2e_sae.run_dir import DIVERGED_FILE, RunDir, samples_of
from e2e_sae.session import Session
from e2e_sae.spliced import CleanPass, SplicedModel, SplicedPass
from e2e_sae.step import StepStats, clean_log_probs, member_loss, record
from e2e_sae.strict import Strict
from e2e_sae.validate import check_output_dir, preflight

# The fields in which members of a group may differ (dotted names, as in ``--set``); every other
# field is shared. ``output_dir`` and ``wandb.name`` (and a sweep's ``wandb.id`` and ``wandb.dir``) are
# per member.
MEMBER_FIELDS = (
    "seed",
    "sae.dict_size_to_input_ratio",
    "loss.sparsity.coeff",
    "train.lr",
    "sae.k",
    "loss.sparsity.target_l0",
)
_PER_MEMBER = (*MEMBER_FIELDS, "output_dir", "wandb.name", "wandb.id", "wandb.dir")


class GroupMember(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._=+-]+$", description="the member's name and subdirectory of output_dir")
    set: dict[str, Any] = Field(
        default={}, description=f"dotted overrides of the run config, among {', '.join(MEMBER_FIELDS)}"
    )


class GroupSpec(Strict):
    """The ``group:`` section of a grouped run config."""

    splice: Literal["auto", "stacked", "loop"] = Field(
        default="auto",
        description="how the members' spliced passes run: stacked (one pass of K x batch_size from the SAE's "
        "block; e2e modes at a hook_resid_pre), loop (one each), or auto (stacked on CUDA where possible, loop on "
        "CPU, where it measured faster)",
    )
    members: list[GroupMember] = Field(min_length=1, description="the SAEs trained together")


def shared_fields(cfg: RunConfig) -> dict[str, Any]:
    """The dotted fields members of a group must agree on (all but the per-member ones), with
    ``data.seed`` resolved: the sample order is shared, whatever each member's seed."""
    flat = flatten_dotted(cfg.to_dict())
    flat["data.seed"] = cfg.data_seed
    return {k: v for k, v in flat.items() if k not in _PER_MEMBER}


def check_members(cfgs: list[RunConfig], names: list[str]) -> None:
    """Members may differ only in :data:`MEMBER_FIELDS`; one-line ConfigError otherwise."""
    if len(set(names)) != len(names):
        raise ConfigError(f"group.members: member names must be unique, got {names}")
    dirs = [c.output_dir for c in cfgs]
    if len(set(dirs)) != len(dirs):
        raise ConfigError("group members: two members share an output_dir; give each its own")

    first = shared_fields(cfgs[0])
    for name, cfg in zip(names[1:], cfgs[1:], strict=True):
        other = shared_fields(cfg)
        for key in sorted(first.keys() | other.keys()):
            if first.get(key) != other.get(key):
                raise ConfigError(
                    f"group member {name}: {key} is {other.get(key)!r} but member {names[0]} has "
                    f"{first.get(key)!r}; members may differ only in {', '.join(MEMBER_FIELDS)} "
                    "(train the others as separate runs or groups)"
                )


def member_configs(raw: dict[str, Any], overrides: dict[str, Any] | None = None) -> tuple[GroupSpec, list[RunConfig]]:
    """A grouped run config (a run config with a ``group:`` section) -> its spec and member configs.

    Each member's config is complete: ``output_dir`` is ``<output_dir>/<name>``, ``data.seed`` is the
    group's sample order, ``wandb.name`` is ``<wandb.name or output_dir name>/<name>``.
    """
    raw = apply_overrides(raw, overrides)
    if "group" not in raw:
        raise ConfigError("group: missing; a grouped run config needs a group: section with members")
    try:
        spec = GroupSpec.model_validate(raw.pop("group"))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "group.")) from None
    base = run_config_from_dict(raw)  # the shared fields, checked once with the usual messages
    cfgs = []
    for m in spec.members:
        for key in m.set:
            if key not in MEMBER_FIELDS:
                raise ConfigError(
                    f"group.members.{m.name}.set: {key} is shared by all members; members may set only "
                    f"{', '.join(MEMBER_FIELDS)}"
                )
        member = apply_overrides(raw, m.set)
        member["output_dir"] = str(base.output_dir / m.name)
        member.setdefault("data", {})["seed"] = base.data_seed
        member.setdefault("wandb", {})["name"] = f"{base.wandb.name or base.output_dir.name}/{m.name}"
        try:
            cfgs.append(run_config_from_dict(member))
        except ConfigError as err:
            raise ConfigError(f"group member {m.name}: {err}") from None
    check_members(cfgs, [m.name for m in spec.members])
    return spec, cfgs


def splice_mode(spec_splice: str, cfg: RunConfig, spliced: SplicedModel, device: torch.device) -> str:
    """``stacked`` runs the K suffixes as one batch of K x batch_size from block L; only possible for
    an SAE at a ``hook_resid_pre`` with a loss past the SAE (``local`` mode and other hooks loop).
    ``auto``: ``loop`` on CPU, where it measured faster (docs/performance.md, "Grouped runs"), and
    ``stacked`` on CUDA, where one large batch replaces K small launches (not measured here)."""
    can_stack = spliced.sae_layer is not None and cfg.loss.needs_logits
    if spec_splice == "stacked" and not can_stack:
        raise ConfigError(
            "group.splice: stacked needs an SAE at blocks.L.hook_resid_pre and an e2e loss; use auto or loop"
        )
    if spec_splice == "auto":
        return "stacked" if can_stack and device.type == "cuda" else "loop"
    return spec_splice if can_stack else "loop"


def spliced_passes(
    models: list[SplicedModel], tokens: torch.Tensor, clean: CleanPass, need_logits: bool, stacked: bool
) -> list[SplicedPass]:
    """Each member's spliced pass from one shared clean pass."""
    if not stacked:
        return [m.spliced_forward(tokens, clean, need_logits=need_logits) for m in models]
    outs = [m.run_sae(clean.acts) for m in models]
    logits, downstream = models[0].run_suffix(torch.cat([o.acts_hat for o in outs]))
    b = tokens.shape[0]
    return [
        SplicedPass(
            **vars(o),
            logits=logits[i * b : (i + 1) * b],
            downstream={h: v[i * b : (i + 1) * b] for h, v in downstream.items()},
            prefixes=m.prefix_passes(tokens, o.prefix_hats),
        )
        for i, (m, o) in enumerate(zip(models, outs, strict=True))
    ]


def group_micro_step(stacked: bool):
    """The :data:`e2e_sae.loop.MicroStep` of a group: one clean pass, K spliced passes, one backward."""

    def micro(runs: list[Run], tokens: torch.Tensor, stats: list[StepStats]) -> None:
        cfg = runs[0].cfg
        clean = runs[0].spliced.clean_forward(tokens, need_logits=cfg.loss.needs_logits)
        passes = spliced_passes([r.spliced for r in runs], tokens, clean, cfg.loss.needs_logits, stacked)
        orig = clean_log_probs(cfg, clean)  # once for all members: their KLs' backward share p_orig
        scaled, results = [], []
        for run, sp in zip(runs, passes, strict=True):
            loss, terms = member_loss(run.cfg, clean, sp, orig)
            scaled.append(loss / cfg.train.grad_accum_steps)
            results.append((loss, terms, sp))
        del orig  # log p_orig is needed no more; p_orig lives on in the graph, once
        functools.reduce(operator.add, scaled).backward()  # one backward through every member's loss
        for run, run_stats, (loss, terms, sp) in zip(runs, stats, results, strict=True):
            record(run_stats, run.act_freq, loss, terms, sp, tokens.numel())

    return micro


def common_checkpoint(cfgs: list[RunConfig], names: list[str]) -> int | None:
    """The newest sample count at which every member (not diverged) has a checkpoint; None if none has any."""
    per_member = [{samples_of(p) for p in list_checkpoints(RunDir(c.output_dir).checkpoints)} for c in cfgs]
    if not any(per_member):
        return None
    common = set.intersection(*per_member)
    if not common:
        raise ConfigError(
            f"--resume: members {names} have no checkpoint at a common sample count; raise "
            "train.keep_checkpoints, or restart in a new output_dir"
        )
    return max(common)


def _diverged(cfgs: list[RunConfig], resume: bool, resume_from: list[Path] | None) -> list[str | None]:
    """Per member, why it stopped (its ``diverged.txt``) or None. With ``resume_from`` only the
    checkpoint says so: a ``diverged.txt`` left in a member's output_dir by an earlier attempt is
    stale when the checkpoint has the member alive (that attempt failed after the checkpoint)."""
    if resume_from is not None:
        if len(resume_from) != len(cfgs):
            raise ConfigError(f"resume_from: {len(resume_from)} checkpoints for {len(cfgs)} members")
        files = [Path(p) / DIVERGED_FILE for p in resume_from]
    else:
        files = [RunDir(c.output_dir).diverged for c in cfgs]
    return [f.read_text().strip() if resume and f.is_file() else None for f in files]


def _resume_sources(
    cfgs: list[RunConfig],
    names: list[str],
    diverged: list[str | None],
    resume: bool,
    resume_from: list[Path] | None,
    group_dir: Path,
) -> list[Path | None]:
    """Per member, the checkpoint directory it continues from (None: starts fresh, or diverged)."""
    if resume_from is not None:
        return [None if d is not None else Path(p) for d, p in zip(diverged, resume_from, strict=True)]
    active = [c for c, d in zip(cfgs, diverged, strict=True) if d is None]
    at = common_checkpoint(active, names) if resume and active else None
    if resume and at is None and active:
        raise ConfigError(f"--resume: no checkpoint in {group_dir}/<member>/checkpoints; drop --resume to start")
    return [
        None if d is not None or at is None else RunDir(c.output_dir).checkpoint(at)
        for c, d in zip(cfgs, diverged, strict=True)
    ]


def train_group(
    spec: GroupSpec,
    cfgs: list[RunConfig],
    *,
    resume: bool = False,
    resume_from: list[Path] | None = None,
    reporters: list[Reporter | None] | None = None,
    group_dir: Path | None = None,
    progress: bool = True,
    after_reports: Callable[[list[Run]], None] | None = None,
) -> list[Run]:
    """Train the members in one process; returns their :class:`Run` (``final`` or ``error`` set).

    ``cfgs``: one complete run config per member of ``spec`` (:func:`member_configs`, or a caller's
    own, e.g. a sweep's trials: any output_dirs). ``reporters``: one per member (or None), called as
    a single run's. ``group_dir`` (default: the first member's parent directory) gets ``group.yaml``.
    ``resume``: every member continues from its checkpoint at the newest sample count all share;
    diverged members stay stopped. ``resume_from`` (implies ``resume``): per member, the checkpoint
    directory to continue from instead, as a single run's (a sweep's: its part of the group checkpoint
    Tune handed back), holding ``diverged.txt`` instead for a member that had diverged: the members'
    states come from there alone, never from files in their output_dirs. ``after_reports(runs)``: see
    :func:`e2e_sae.loop.run_loop` (a sweep reports the group's step there, as one).
    """
    names = [m.name for m in spec.members]
    resume = resume or resume_from is not None
    if len(names) != len(cfgs):
        raise ConfigError(f"group: {len(names)} members in the spec but {len(cfgs)} member configs")
    check_members(cfgs, names)
    group_dir = Path(group_dir) if group_dir is not None else cfgs[0].output_dir.parent
    diverged = _diverged(cfgs, resume, resume_from)
    check_output_dir(group_dir, resume)  # a fresh group never writes into an existing one
    for cfg in cfgs:
        preflight(cfg, resume=resume)
    sources = _resume_sources(cfgs, names, diverged, resume, resume_from, group_dir)

    session = Session.open(cfgs, reporters)
    mode = splice_mode(spec.splice, cfgs[0], session.runs[0].spliced, session.device)
    session.restore(sources, diverged)
    group_dir.mkdir(parents=True, exist_ok=True)
    RunDir(group_dir).group.write_text(
        yaml.safe_dump(
            {"splice": spec.splice, "splice_used": mode, "members": [m.model_dump() for m in spec.members]},
            sort_keys=False,
        )
    )
    session.train(
        group_micro_step(mode == "stacked"),
        resume=resume,
        stop_alone=True,
        progress=progress,
        after_reports=after_reports,
    )
    runs = session.runs
    return runs
