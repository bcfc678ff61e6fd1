"""The dtypes of the parameters the student's forward sees, per ZeRO stage and precision.

  python tests/precision_probe.py RECIPE OUT.json STAGE:PRECISION ...   (PRECISION: fp32, bf16, fp16)

Runs in one process: for each STAGE:PRECISION it starts training as mmkd.train does (Distillation's
setup) from the recipe's DeepSpeed JSON with that ZeRO stage and precision, runs one optimizer step,
and records {"STAGE:PRECISION": sorted dtypes seen in forward} into OUT.json. A forward pre-hook
registered after DeepSpeed's own (which gathers ZeRO-3 partitions) reads them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from mmkd.engine import load_ds_config
from mmkd.train import Distillation
from mmkd.train_config import load_train_config

PRECISIONS = {"fp32": {}, "bf16": {"bf16": {"enabled": True}}, "fp16": {"fp16": {"enabled": True}}}


def probe(recipe: str, stage: int, precision: str) -> list[str]:
    """Sorted dtypes of the student's parameters as seen by its modules' forward in one training step."""
    cfg = load_train_config(recipe, ["--max_steps=1"])
    ds_config = {key: value for key, value in load_ds_config(cfg.ds_config).items() if key not in ("bf16", "fp16")}
    ds_config.update(PRECISIONS[precision], zero_optimization={"stage": stage})
    distillation = Distillation(cfg, ds_config, measuring=True)
    distillation.setup()
    engine = distillation.engine
    seen: set[str] = set()

    def record(module: torch.nn.Module, _args: object) -> None:
        seen.update(str(p.dtype) for p in module.parameters(recurse=False) if p.numel() > 0)

    for module in engine.module.student.modules():
        module.register_forward_pre_hook(record)
    distillation.step()
    engine.destroy()
    return sorted(seen)


def main(argv: list[str]) -> None:
    recipe, out, *cases = argv
    results = {}
    for case in cases:
        stage, precision = case.split(":")
        results[case] = probe(recipe, int(stage), precision)
    Path(out).write_text(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
