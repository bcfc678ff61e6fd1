"""`mmkd profile`: time N training steps of a recipe and write a throughput report (mmkd/profiling.py).

examples:
  mmkd profile recipes/cpu_main.yaml --corpus=runs/main/corpus --student=runs/main/student \\
      --teacher_cache=runs/main/teacher_cache_train --report reports/profile
  mmkd profile recipe.yaml --live_teacher --steps 5 --warmup 1 --report reports/live
  scripts/profile_throughput.sh recipe.yaml --report DIR        (through the DeepSpeed launcher)
options (anywhere after the recipe, between the --key=value train config overrides):
  --steps N     measured optimizer steps (default 10)
  --warmup W    untimed steps before them, >= 1 (default 2); the flops profiler runs on the last
  --report DIR  writes report.md, report.json, flops_profiler.txt, torch_ops.txt
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    """Fill in the `profile` parser (see mmkd/cli.py); the options are parsed by mmkd.profiling."""
    parser.description = __doc__
    parser.add_argument("recipe", help="recipe file (.json, .yaml, .yml) of train config keys")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, metavar="--key=value | --steps N | --warmup W | "
                        "--report DIR", help="train config overrides and the options above")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Profile the recipe's training steps; rank 0 writes the report and prints one SUMMARY line."""
    from pathlib import Path

    import torch

    from mmkd.profiling import parse_options, profile, summary_line
    from mmkd.train_config import load_train_config

    recipe, options, overrides = parse_options([args.recipe, *args.arguments])
    report = profile(load_train_config(recipe, overrides), options.steps, options.warmup, Path(options.report))
    if torch.distributed.get_rank() == 0:
        print(summary_line(report, Path(options.report)), flush=True)
    return 0
