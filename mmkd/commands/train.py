"""`mmkd train`: distil the teacher into the student (one process; see mmkd/train.py for launchers).

examples:
  mmkd train recipe.yaml
  mmkd train cpu_main --corpus C --student S --teacher_cache T    (a shipped recipe, from any directory)
  mmkd train recipe.yaml --max_steps=100 --ds_config=cpu_fp32_zero2 --weights.tlm=0.1
  mmkd train recipe.yaml --ds.optimizer.params.lr=5e-5 --ds.train_micro_batch_size_per_gpu=32
  mmkd train recipe.yaml --resume
  OMP_NUM_THREADS=1 deepspeed --num_gpus 2 --module mmkd.train recipe.yaml   (several ranks)
The recipe (JSON or YAML, or a shipped recipe's name) and the overrides (--key=value or --key value) set
the keys of mmkd.train_config.TrainConfig, listed below; batch sizes, lr, optimizer, scheduler,
precision and ZeRO stage live in its ds_config JSON, whose values --ds.<path>=value changes (recorded
in the run's train_config.json under `ds`).
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    """Fill in the `train` parser (see mmkd/cli.py)."""
    from mmkd.train_config import config_key_help

    parser.description = __doc__
    parser.epilog = f"train config keys:\n{config_key_help()}"
    parser.add_argument("arguments", nargs=argparse.REMAINDER, metavar="[RECIPE] --key=value ...",
                        help="recipe file (.json, .yaml, .yml) of train config keys, or a shipped name; then train "
                             "config overrides, applied after it (--key value also; --flag = --flag=true; "
                             "--ds.<path>=value for the DeepSpeed JSON); without a recipe, the defaults and overrides")
    parser.set_defaults(func=run, leading_options="arguments")  # overrides may come first: no recipe (mmkd/cli.py)


def run(args: argparse.Namespace) -> int:
    """Train the recipe; rank 0 prints one line: steps, what stopped the run, schedule, export."""
    from mmkd.train import train
    from mmkd.train_config import load_train_config

    has_recipe = bool(args.arguments) and not args.arguments[0].startswith("-")
    recipe, overrides = (args.arguments[0], args.arguments[1:]) if has_recipe else (None, args.arguments)
    summary = train(load_train_config(recipe, overrides))
    if summary["rank"] == 0:
        print(f"mmkd train: {summary['steps']} of {summary['total_steps']} steps, stopped by "
              f"{summary['stopped_by']}; schedule at {summary['progress']:.0%} (lr {summary['lr']:.3g}), "
              f"{summary['skipped']} skipped steps; export: {summary['export'] or 'none'}", flush=True)
    return 0
