"""``python -m sweeps plan | run | resume | status | report | analyse | export``: the arguments, parsed; each
command is a function of :mod:`sweeps.commands`. A bad input is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from e2e_sae.config import ConfigError
from sweeps import commands as commands_
from sweeps.experiment import ANALYSIS_DIR, REPORT_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps", description="Ray Tune sweeps of e2e_sae runs")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in [
        ("plan", "print the expanded trial table; starts nothing"),
        ("run", "run every trial of a sweep file with Ray Tune"),
    ]:
        p = sub.add_parser(name, help=help_)
        p.add_argument("file", help="sweep YAML")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a sweep-file field (YAML value)")
    p = sub.add_parser("resume", help="continue an interrupted sweep from its experiment directory")
    p.add_argument("path")
    p.add_argument(
        "--storage-shared",
        action="store_true",
        help="PATH is on a filesystem every node of the cluster mounts (as storage_shared: true)",
    )
    p = sub.add_parser("status", help="trials by state with their latest metrics")
    p.add_argument("path")
    p = sub.add_parser("report", help="Pareto report of an experiment directory")
    p.add_argument("path")
    p.add_argument(
        "--out",
        default=None,
        help=f"output directory (default: PATH/{REPORT_DIR}; ./{REPORT_DIR} for s3:// or gs:// paths)",
    )
    p.add_argument("--wandb", action="store_true", help="also upload the report to the sweep's W&B group")
    p = sub.add_parser("analyse", help="feature browser and decoder geometry of the frontier SAEs")
    p.add_argument("path")
    p.add_argument("--out", default=None, help=f"output directory, must not exist (default: PATH/{ANALYSIS_DIR})")
    p.add_argument(
        "--trials",
        nargs="+",
        metavar="NAME",
        help="analyse these trials (directory names) instead of, per hook and mode, the frontier SAE "
        "nearest the matched level",
    )
    p = sub.add_parser("export", help="the finished SAEs as SAELens directories and a manifest (a hub release)")
    p.add_argument("path")
    p.add_argument("--frontier", action="store_true", help="only the SAEs on a frontier of the report")
    p.add_argument("--out", required=True, help="the release directory, new or empty (never overwritten)")
    args = parser.parse_args(argv)
    commands: dict[str, Callable[[], int]] = {
        "plan": lambda: commands_.plan(args.file, args.set),
        "run": lambda: commands_.run(args.file, args.set),
        "resume": lambda: commands_.resume(args.path, args.storage_shared),
        "status": lambda: commands_.status(args.path),
        "report": lambda: commands_.report(args.path, args.out, args.wandb),
        "analyse": lambda: commands_.analyse(args.path, args.out, args.trials),
        "export": lambda: commands_.export(args.path, args.frontier, args.out),
    }
    try:
        return commands[args.command]()
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
