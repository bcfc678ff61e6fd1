"""AdamW step time on this machine: torch's default (foreach), foreach=False and fused, over the
parameters as a model holds them (many tensors) and as ZeRO's optimizer holds them (one flat fp32
partition). Why the CPU DeepSpeed configs (ds_configs/cpu_*.json) and the MSE baseline set
"fused": true.

  .venv/bin/python scripts/bench_optimizer.py [--parameters 23600000] [--steps 8]

Prints one table: median ms per optimizer step (after one warm-up step), fp32, gradients random.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

VARIANTS = {"default (foreach)": {}, "foreach=False": {"foreach": False}, "fused": {"fused": True}}


def step_ms(params: list[torch.nn.Parameter], options: dict, steps: int) -> float:
    """Median wall time of `steps` AdamW steps over `params`, ms."""
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **options)
    for param in params:
        param.grad = torch.randn_like(param)
    optimizer.step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.step()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parameters", type=int, default=23_600_000, help="default: the main job's student")
    parser.add_argument("--tensors", type=int, default=200, help="tensors of the per-tensor layout")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    layouts = {f"{args.tensors} tensors": [torch.nn.Parameter(torch.randn(args.parameters // args.tensors))
                                           for _ in range(args.tensors)],
               "1 flat tensor (ZeRO)": [torch.nn.Parameter(torch.randn(args.parameters))]}
    print(f"AdamW step, {args.parameters:,} fp32 parameters, {torch.get_num_threads()} threads, median ms")
    print("| layout | " + " | ".join(VARIANTS) + " |")
    print("|---|" + "---:|" * len(VARIANTS))
    for layout, params in layouts.items():
        print(f"| {layout} | " + " | ".join(f"{step_ms(params, options, args.steps):.1f}"
                                          for options in VARIANTS.values()) + " |")


if __name__ == "__main__":
    main()
