"""Train one SAE spliced into a frozen language model: ``python -m e2e_sae.train CONFIG.yaml``.

The loop itself (:mod:`e2e_sae.loop`), top to bottom: each optimizer step accumulates micro-batches
(clean pass -> SAE -> spliced pass -> loss -> backward; :mod:`e2e_sae.step`), then clips, steps Adam
and the schedule; every so many samples it logs, evaluates on the held-out tokens and checkpoints. A
caller (e.g. the Ray Tune sweep layer) passes ``reporter(metrics, checkpoint_dir)``, called at every
eval/checkpoint and once at the end with ``metrics["final"] = True``; the library knows nothing of Ray.
A config with a ``group:`` section trains several SAEs on one clean pass (:mod:`e2e_sae.group`).

Output directory: ``config.yaml`` (resolved), ``metrics.jsonl`` (one JSON object per train log /
eval row), ``checkpoints/samples_<n>/checkpoint.pt``, ``metrics.json`` (final eval).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from e2e_sae.checkpoint import latest_checkpoint
from e2e_sae.config import ConfigError, RunConfig, add_set_argument, load_run_config, parse_overrides, read_yaml_mapping
from e2e_sae.group import member_configs, train_group
from e2e_sae.loop import Reporter, TrainingDiverged, single_micro_step
from e2e_sae.metric_names import HEADLINE
from e2e_sae.run_dir import RunDir
from e2e_sae.session import Session
from e2e_sae.validate import preflight

__all__ = ["train", "main", "TrainingDiverged"]


def train(
    cfg: RunConfig,
    *,
    resume_from: str | Path | None = None,
    reporter: Reporter | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one SAE as configured; returns the final metrics (also written to ``metrics.json``).
    ``resume_from``: the run's ``output_dir`` (its newest checkpoint, as the CLI's ``--resume``) or one
    checkpoint directory; everything the next step depends on comes back from it, so the run continues
    bit for bit. A fresh run refuses an ``output_dir`` that holds files (ConfigError naming ``resume_from=``)."""
    return _train(cfg, resume_point(resume_from), reporter, progress, f"resume_from={str(cfg.output_dir)!r}")


def resume_point(resume_from: str | Path | None) -> Path | None:
    """The checkpoint directory ``resume_from`` names: a run's output_dir means its newest checkpoint."""
    if resume_from is None:
        return None
    path = Path(resume_from)
    if RunDir(path).checkpoints.is_dir() or RunDir(path).config.is_file():
        newest = latest_checkpoint(path)
        if newest is None:
            raise ConfigError(f"resume_from: no checkpoint in {RunDir(path).checkpoints}; drop resume_from to start")
        return newest
    return path


def _train(
    cfg: RunConfig, resume_from: Path | None, reporter: Reporter | None, progress: bool, how_to_resume: str
) -> dict[str, Any]:
    # Every check that needs no model runs first: a bad config costs nothing and writes nothing.
    preflight(cfg, resume=resume_from is not None, how_to_resume=how_to_resume)
    session = Session.open([cfg], [reporter])
    session.restore([resume_from])
    session.train(single_micro_step, resume=resume_from is not None, progress=progress)
    (run,) = session.runs
    assert run.final is not None
    return run.final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e_sae.train", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="run config YAML (with a group: section: a grouped run)")
    add_set_argument(parser)
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
        raw = read_yaml_mapping(args.config)
        if "group" in raw:
            return _main_group(raw, overrides, args.resume, not args.no_progress)
        cfg = load_run_config(args.config, overrides)
        resume_from = None
        if args.resume:
            resume_from = latest_checkpoint(cfg.output_dir)
            if resume_from is None:
                raise ConfigError(
                    f"--resume: no checkpoint in {RunDir(cfg.output_dir).checkpoints}; drop --resume to start"
                )
        metrics = _train(cfg, resume_from, None, not args.no_progress, "--resume")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    print(" ".join(f"{k}={metrics[k]:.4g}" for k in HEADLINE))
    print(f"wrote {RunDir(cfg.output_dir).metrics}")
    return 0


def _main_group(raw: dict[str, Any], overrides: dict[str, Any], resume: bool, progress: bool) -> int:
    """A grouped run: one line per member; exit 3 if a member diverged (the others still finish)."""
    spec, cfgs = member_configs(raw, overrides)
    runs = train_group(spec, cfgs, resume=resume, progress=progress)
    for member, run in zip(spec.members, runs, strict=True):
        if run.final is not None:
            print(
                f"{member.name}: "
                + " ".join(f"{k}={run.final[k]:.4g}" for k in HEADLINE)
                + f" (wrote {RunDir(run.cfg.output_dir).metrics})"
            )
        else:
            print(f"{member.name}: error: {run.error} ({RunDir(run.cfg.output_dir).diverged})", file=sys.stderr)
    return 3 if any(run.final is None for run in runs) else 0


if __name__ == "__main__":
    from e2e_sae.cli_exit import exit_with

    exit_with(main)
