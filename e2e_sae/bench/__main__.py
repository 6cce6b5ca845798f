"""``python -m e2e_sae.bench``: the command line of :mod:`e2e_sae.bench`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from e2e_sae.bench import __doc__ as BENCH_DOC
from e2e_sae.bench.group import group_benchmark, group_summary
from e2e_sae.bench.reference import compare, describe, setup_reference
from e2e_sae.bench.saelens import setup_saelens
from e2e_sae.bench.throughput import PRESETS, benchmark, compare_bf16, load_bench_config, pack, summary
from e2e_sae.config import ConfigError
from e2e_sae.modes import MODES
from e2e_sae.validate import check_pretrained_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m e2e_sae.bench", description=BENCH_DOC.split("\n")[0])
    p.add_argument("config", nargs="?", help="run config YAML (default: e2e on --model, paper settings)")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--model", help=f"a preset ({', '.join(PRESETS)}) or a model.name, e.g. builtin:pycode")
    p.add_argument("--mode", choices=MODES, help="shorthand for --set mode=...")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random tokens")
    p.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: table for A100/H100/H200)")
    p.add_argument("--out", help="write the result as JSON")
    p.add_argument("--setup-reference", metavar="DIR", help="create DIR/venv with the authors' e2e_sae and exit")
    p.add_argument(
        "--setup-saelens", metavar="DIR", help="create DIR/venv with sae-lens (architecture equality tests) and exit"
    )
    p.add_argument("--reference", metavar="DIR", help="compare with the reference venv in DIR, alternating")
    p.add_argument("--repeats", type=int, default=5, help="alternating repeats with --reference/--group (default 5)")
    p.add_argument("--compare-bf16", action="store_true", help="CE-loss increase fp32 vs bf16 autocast")
    p.add_argument("--sae", help="trained SAE checkpoint (= --set sae.pretrained_path=...), e.g. for --compare-bf16")
    p.add_argument("--group", type=int, metavar="K", help="K-member grouped run vs K separate runs, alternating")
    p.add_argument("--pack", help="comma-separated trial counts, e.g. 1,2,4: makespan of N concurrent runs")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    worker_args = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--seed", str(args.seed)]
    worker_args += ["--threads", str(args.threads)] if args.threads else []
    worker_args += ["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []
    try:
        if args.setup_reference:
            print(f"reference venv ready: {setup_reference(Path(args.setup_reference))}")
            return 0
        if args.setup_saelens:
            print(f"sae-lens venv ready: {setup_saelens(Path(args.setup_saelens))}")
            return 0
        if args.model and args.model not in PRESETS and "." not in args.model and ":" not in args.model:
            raise ConfigError(f"--model: {args.model!r} is neither a preset ({', '.join(PRESETS)}) nor a model name")
        overrides = [*(args.overrides or []), *([f"sae.pretrained_path={args.sae}"] if args.sae else [])]
        cfg = load_bench_config(args.config, overrides, args.model, args.mode)
        check_pretrained_path(cfg)
        if args.reference:
            result = compare(
                cfg, Path(args.reference), args.repeats, worker_args, args.steps, args.warmup, args.threads, args.seed
            )
            text = describe(result)
        elif args.compare_bf16:
            result = compare_bf16(cfg)
            text = (
                f"ce_loss_increase fp32 {result['fp32']['ce_loss_increase']:.5f}, bf16 "
                f"{result['bf16']['ce_loss_increase']:.5f}, diff {result['ce_loss_increase_diff']:+.5f}"
            )
        elif args.group:
            if args.group < 1:
                raise ConfigError(f"--group: K must be at least 1, got {args.group}")
            result = group_benchmark(cfg, args.group, args.steps, args.warmup, args.repeats, args.seed)
            text = group_summary(result)
        elif args.pack:
            result = pack(cfg, [int(n) for n in args.pack.split(",")], worker_args)
            text = "\n".join(
                f"{r['n_trials']} trials: makespan {r['makespan_s']:.1f} s, "
                f"{r['tokens_per_s_total']:,.0f} tokens/s in total"
                for r in result["pack"]
            )
        else:
            result = benchmark(cfg, args.steps, args.warmup, args.seed, args.peak_tflops)
            text = summary(result)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result["command"] = "python -m e2e_sae.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    from e2e_sae.cli_exit import exit_with

    exit_with(main)
