"""`mmkd train`: distil the teacher into the student (one process; see mmkd/train.py for launchers).

examples:
  mmkd train recipe.yaml
  mmkd train recipe.yaml --max_steps=100 --ds_config=ds_configs/cpu_fp32_zero2.json
  mmkd train recipe.yaml --resume
  OMP_NUM_THREADS=1 deepspeed --num_gpus 2 --module mmkd.train recipe.yaml   (several ranks)
The recipe (JSON or YAML) and the --key=value overrides set the keys of mmkd.train_config.TrainConfig;
batch sizes, lr, optimizer, scheduler, precision and ZeRO stage live in its ds_config JSON.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    """Fill in the `train` parser (see mmkd/cli.py)."""
    parser.description = __doc__
    parser.add_argument("recipe", help="recipe file (.json, .yaml, .yml) of train config keys")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="--key=value",
                        help="train config overrides, applied after the recipe (--flag = --flag=true)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmkd.train import main

    return main([args.recipe, *args.overrides])
