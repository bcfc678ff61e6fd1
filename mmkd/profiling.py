"""Where a training step's time goes: N steps of a recipe's training, measured and written as a report.

  mmkd profile RECIPE [--key=value ...] [--steps N] [--warmup W] --report DIR
  MODULE=mmkd.profiling scripts/launch.sh RECIPE ... --report DIR     (several ranks; rank 0 reports)

The steps are training's own, after its start-up (`mmkd.train.Distillation`: `setup`, then `step`),
run under torch.profiler: their parts are the mmkd.phases ranges (data, teacher, forward with
student_forward and loss/<term> inside, backward, step), and communication is the union of the
collectives' spans (gloo/c10d ops on a CPU, NCCL kernels on a GPU; it lies inside backward and step,
and may overlap compute there). The DeepSpeed config gets `wall_clock_breakdown: true` (its
fwd/bwd/bwd_allreduce/step timers are reported beside ours) and a `flops_profiler` block that
profiles the last warm-up step into DIR/flops_profiler.txt; its tensorboard block is dropped so a
profile writes nothing into the recipe's output_dir.
Times are milliseconds per optimizer step, means over the N measured steps, on rank 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from deepspeed.accelerator import get_accelerator
from torch.autograd import DeviceType

from mmkd import cli, monitoring
from mmkd.engine import load_ds_config, parameter_count
from mmkd.errors import MMKDError
from mmkd.objectives.combined import TERMS
from mmkd.phases import PREFIX
from mmkd.train import Distillation
from mmkd.train_config import TrainConfig

if TYPE_CHECKING:
    from torch.autograd.profiler_util import EventList

STEP_PHASES = ("data", "teacher", "forward", "backward", "step")  # a micro-step, in order; they add up
FORWARD_PARTS = ("student_forward", *(f"loss/{term}" for term in TERMS))  # inside forward
DEEPSPEED_TIMERS = ("fwd", "bwd", "bwd_inner", "bwd_allreduce", "step")  # its global timers, ms
LABELS = {
    "data": "data: sampling, collate, to device",
    "forward": "forward (engine)",
    "student_forward": "student forward (TLM pair, x, y)",
    "forward_other": "other (DeepSpeed hooks, weighted sum)",
    "backward": "backward (engine)",
    "step": "optimizer step (engine.step)",
    "other": "other (loop, profiler)",
}
FILES = {"markdown": "report.md", "json": "report.json", "flops_profiler": "flops_profiler.txt",
         "torch_ops": "torch_ops.txt"}


def without_tensorboard(ds_config: dict[str, Any]) -> dict[str, Any]:
    """`ds_config` without its tensorboard block: a measurement writes nothing into the recipe's output_dir."""
    return {key: value for key, value in ds_config.items() if key != "tensorboard"}


def profiling_ds_config(ds_config: dict[str, Any], report_dir: Path, profile_step: int) -> dict[str, Any]:
    """`ds_config` with wall_clock_breakdown on, the flops profiler at optimizer step `profile_step`
    (0-based) writing to report_dir/flops_profiler.txt, and no tensorboard block."""
    config = without_tensorboard(ds_config)
    config["wall_clock_breakdown"] = True
    config["flops_profiler"] = {"enabled": True, "profile_step": profile_step, "module_depth": -1,
                                "top_modules": 3, "detailed": True,
                                "output_file": str(report_dir / FILES["flops_profiler"])}
    return config


def span_union_ms(spans: list[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals in microseconds, in milliseconds."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total / 1e3


def phase_ms(events: EventList) -> dict[str, float]:
    """Total wall time of each mmkd.phases range on the host, ms, by name without the prefix."""
    totals: dict[str, float] = {}
    for event in events:
        if event.device_type == DeviceType.CPU and event.name.startswith(PREFIX):
            name = event.name[len(PREFIX):]
            totals[name] = totals.get(name, 0.0) + (event.time_range.end - event.time_range.start) / 1e3
    return totals


def communication_ms(events: EventList, on_gpu: bool) -> float:
    """Time with a collective in flight, ms: NCCL kernels on a GPU; gloo work and c10d ops otherwise."""
    if on_gpu:
        spans = [(e.time_range.start, e.time_range.end) for e in events
                 if e.device_type == DeviceType.CUDA and e.name.lower().startswith("nccl")]
    else:
        spans = [(e.time_range.start, e.time_range.end) for e in events
                 if e.device_type == DeviceType.CPU and e.name.startswith(("c10d::", "gloo:"))]
    return span_union_ms(spans)


def profile(cfg: TrainConfig, steps: int, warmup: int, report_dir: Path) -> dict[str, Any]:
    """Run `warmup` then `steps` optimizer steps of `cfg`'s training; returns the report (see
    `write_report`), which rank 0 also writes to `report_dir`."""
    if steps < 1 or warmup < 1:
        raise MMKDError(f"profile: --steps ({steps}) and --warmup ({warmup}) must be >= 1 (the flops profiler "
                        "runs on the last warm-up step, outside the measured ones)")
    report_dir.mkdir(parents=True, exist_ok=True)
    ds_config = profiling_ds_config(load_ds_config(cfg.ds_config, cfg.ds), report_dir, profile_step=warmup - 1)
    distillation = Distillation(cfg, ds_config, measuring=True)
    distillation.setup()
    run, engine, peak = distillation.run, distillation.engine, distillation.peak
    n_params = parameter_count(engine.module.student)
    for _ in range(warmup):
        distillation.step()
    on_gpu = engine.device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if on_gpu else [])
    throughput = monitoring.Throughput(run.world, peak)
    deepspeed_ms = dict.fromkeys(DEEPSPEED_TIMERS, 0.0)
    with torch.profiler.profile(activities=activities) as profiler:
        get_accelerator().synchronize()
        throughput.restart()
        start = time.perf_counter()
        for _ in range(steps):
            for batch, _out in distillation.step():
                throughput.add_batch(batch, run.flops(batch))
            timers = engine.get_wall_clock_timers()  # the global timers cover the whole optimizer step
            for name in DEEPSPEED_TIMERS:
                deepspeed_ms[name] += timers.get(name, 0.0)
        get_accelerator().synchronize()
        total_ms = (time.perf_counter() - start) * 1e3
        rates = throughput.rates()
    events = profiler.events()
    phases = phase_ms(events)
    per_step = {name: phases.get(name, 0.0) / steps for name in (*STEP_PHASES, *FORWARD_PARTS)}
    report = {
        "recipe": cfg.to_dict(),
        "device": device_name(engine.device),
        "world_size": run.world,
        "micro_batch": run.micro,
        "accumulation": run.accumulation,
        "samples_per_step": run.micro * run.accumulation * run.world,
        "teacher": "live" if run.cache is None else "cached",
        "terms": run.terms,
        "steps": steps,
        "warmup": warmup,
        "step_ms": total_ms / steps,
        "phases_ms": {**{name: per_step[name] for name in STEP_PHASES},
                      "other": total_ms / steps - sum(per_step[name] for name in STEP_PHASES)},
        "forward_ms": {**{name: per_step[name] for name in FORWARD_PARTS},
                       "forward_other": per_step["forward"] - sum(per_step[name] for name in FORWARD_PARTS)},
        "communication_ms": communication_ms(events, on_gpu) / steps,
        "deepspeed_timers_ms": {name: value / steps for name, value in deepspeed_ms.items()},
        **rates,
        "peak_tflops": peak,
        "parameters": n_params,
        "flops_profiler": {"file": FILES["flops_profiler"],
                           "fwd_flops_last_micro_batch": getattr(engine.flops_profiler, "flops", None)},
        "files": FILES,
    }
    if run.rank == 0:
        (report_dir / FILES["torch_ops"]).write_text(
            events.key_averages().table(sort_by="cpu_time_total", row_limit=40) + "\n")
        write_report(report, report_dir)
    return report


def device_name(device: torch.device) -> str:
    """`cpu`, or `cuda:0 (NVIDIA H100 80GB HBM3)`."""
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def write_report(report: dict[str, Any], report_dir: Path) -> None:
    """report.json (the dict) and report.md (its table) in `report_dir`."""
    (report_dir / FILES["json"]).write_text(json.dumps(report, indent=2) + "\n")
    (report_dir / FILES["markdown"]).write_text(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown page: the split of a step, then throughput and DeepSpeed's own figures."""
    step = report["step_ms"]

    def row(label: str, ms: float) -> str:
        return f"| {label} | {ms:.2f} | {100 * ms / step:.1f} |"

    phases, forward = report["phases_ms"], report["forward_ms"]
    lines = [
        f"# Training step profile ({report['teacher']} teacher)",
        "",
        f"{report['steps']} optimizer steps after {report['warmup']} warm-up, on {report['device']}, "
        f"{report['world_size']} rank(s); a step = {report['micro_batch']} pairs x {report['accumulation']} "
        f"micro-batches x {report['world_size']} rank(s) = {report['samples_per_step']} pairs; max_length "
        f"{report['recipe']['max_length']}; DeepSpeed config {report['recipe']['ds_config']}. Times: ms per "
        "optimizer step (mean), rank 0.",
        "",
        "| part | ms/step | % of step |",
        "|---|---:|---:|",
        row(LABELS["data"], phases["data"]),
        row("teacher: " + ("live forward" if report["teacher"] == "live" else "cache read"), phases["teacher"]),
        row(LABELS["forward"], phases["forward"]),
        row("&nbsp;&nbsp;" + LABELS["student_forward"], forward["student_forward"]),
        *(row(f"&nbsp;&nbsp;loss {term}" + ("" if term in report["terms"] else " (weight 0: not computed)"),
              forward[f"loss/{term}"]) for term in TERMS),
        row("&nbsp;&nbsp;" + LABELS["forward_other"], forward["forward_other"]),
        row(LABELS["backward"], phases["backward"]),
        row(LABELS["step"], phases["step"]),
        row(LABELS["other"], phases["other"]),
        row("**total**", step),
        row("communication (inside backward and step)", report["communication_ms"]),
        "",
        f"- samples/s {report['samples_per_s']:.1f}, tokens/s {report['tokens_per_s']:.0f} (non-padding, the "
        "student's three inputs; all ranks)",
        f"- TFLOP/s per device {report['tflops']:.3g} (the FLOPs each micro-step does: student passes, attention, "
        "MLM head rows, losses; mmkd/flops.py)" + (f"; MFU {100 * report['mfu']:.3g}% of {report['peak_tflops']:.3g} "
                                            "TFLOP/s peak" if "mfu" in report else ""),
        "- DeepSpeed wall_clock_breakdown timers, ms/step: " +
        ", ".join(f"{name} {value:.2f}" for name, value in report["deepspeed_timers_ms"].items()),
        f"- DeepSpeed flops profiler (warm-up step {report['warmup'] - 1}): {report['flops_profiler']['file']}; "
        f"forward FLOPs of its last micro-batch {report['flops_profiler']['fwd_flops_last_micro_batch']} (its "
        "latency figures are not used: the top-level forward latency is wrong on a CPU)",
        f"- top torch ops: {report['files']['torch_ops']}",
        "",
    ]
    return "\n".join(lines)


def parse_options(argv: list[str]) -> tuple[str, argparse.Namespace, list[str]]:
    """(recipe, --steps/--warmup/--report, train config overrides) from `mmkd profile`'s arguments: the
    recipe first, then the options and overrides in any order."""
    recipe, *rest = argv
    parser = argparse.ArgumentParser(prog="mmkd profile", allow_abbrev=False, add_help=False)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--report", required=True)
    options, overrides = parser.parse_known_args(rest)
    return recipe, options, overrides


def summary_line(report: dict[str, Any], report_dir: Path) -> str:
    """The one SUMMARY line `mmkd profile` prints (rank 0)."""
    mfu = f", MFU {100 * report['mfu']:.3g}%" if "mfu" in report else ""
    return (f"SUMMARY: {report['steps']} steps, {report['step_ms']:.1f} ms/step, {report['samples_per_s']:.1f} "
            f"samples/s, {report['tokens_per_s']:.0f} tokens/s, {report['tflops']:.3g} TFLOP/s{mfu}; "
            f"report {report_dir / FILES['markdown']}")


def main(argv: list[str] | None = None) -> int:
    """`python -m mmkd.profiling ARGS` (scripts/profile_throughput.sh, under the launcher): `mmkd profile ARGS`."""
    return cli.main(["profile", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
