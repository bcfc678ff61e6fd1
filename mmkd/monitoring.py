"""What a run reports: scalars through DeepSpeed's monitor, and a progress bar, on rank 0.

Scalars (TensorBoard tags, one namespace; x axis = optimizer steps, engine.global_steps):
  train/loss, train/<term>            total and each computed MMKDLoss term (mean over ranks)
  train/grad_norm                     global gradient norm before clipping
  train/lr                            the lr the logged step ran at (mmkd.schedule)
  train/skipped_steps                 steps so far with a non-finite loss or a skipped update (mmkd.step_health)
  train/samples_per_s, train/tokens_per_s    over all ranks (tokens: non-padding, three student inputs)
  train/padding_efficiency            non-padding / padded positions of the three student inputs (this rank)
  train/tflops, train/mfu             achieved TFLOP/s per device (the FLOPs of mmkd.flops.MicroStepFlops),
                                      and that over the device's peak (peak_tflops)
  dev/loss, dev/<term>, dev/lang/<lang>      dev evaluation (mmkd.train.evaluate)
  dev/retrieval/<lang>/x2y, .../y2x  top-1 translation retrieval on dev (mmkd.evaluation.retrieval.dev_retrieval;
                                     train config eval_retrieval)
  dev/retrieval/mean                 their mean: the figure to choose a checkpoint by
  train/loss_scale, train/elapsed_time_ms_<part>    DeepSpeed's own scalars (fp16; wall_clock_breakdown),
                                     moved from Train/Samples/<name> (`StepMonitor`)
Text: run/config, the run's train config and DeepSpeed JSON (as given to deepspeed.initialize).
DeepSpeed's own monitor writes Train/Samples/<name> against samples; `StepMonitor` moves those events
into train/ at the optimizer step, and drops its Train/Samples/lr (read after the step: the lr the
next step runs at; train/lr is the one the step ran at, and is written every log_interval steps).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine
    from deepspeed.monitor.monitor import MonitorMaster

# Dense bf16/fp16 tensor-core peaks, TFLOP/s (vendor data sheets, without sparsity), by a part of
# torch.cuda.get_device_name(); the first match wins, so the specific names come first.
GPU_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200 NVL", 835.0), ("H100", 989.0),
                   ("H200", 989.0), ("A100", 312.0), ("L40S", 362.0))
STUDENT_INPUTS = (("tlm_input_ids", "tlm_attention_mask"), ("x_input_ids", "x_attention_mask"),
                  ("y_input_ids", "y_attention_mask"))


def batch_tokens(batch: dict[str, Any]) -> tuple[int, int]:
    """(non-padding tokens, padded positions) over the student's three inputs (TLM pair, x, y)."""
    real = sum(int(batch[mask].sum()) for _, mask in STUDENT_INPUTS)
    padded = sum(batch[ids].numel() for ids, _ in STUDENT_INPUTS)
    return real, padded


def gpu_peak_tflops(name: str) -> float:
    """Dense bf16/fp16 peak TFLOP/s of the GPU called `name` (GPU_PEAK_TFLOPS), 0.0 when not listed.

    "NVIDIA H100 80GB HBM3" (SXM) 989, "NVIDIA H100 PCIe" 756, "NVIDIA H100 NVL" 835, "NVIDIA
    A100-SXM4-40GB" 312, "NVIDIA H200" 989, "NVIDIA L40S" 362.
    """
    lowered = name.lower()
    return next((peak for key, peak in GPU_PEAK_TFLOPS if key.lower() in lowered), 0.0)


def peak_tflops(configured: float, dtype: torch.dtype, device: torch.device) -> float:
    """Per-device peak TFLOP/s for MFU: `configured` (train config peak_tflops) when > 0; else the
    GPU's from its exact name (gpu_peak_tflops); on a CPU a matmul peak measured now. 0.0 when
    unknown (no MFU is then reported)."""
    if configured > 0:
        return configured
    if device.type == "cuda":
        return gpu_peak_tflops(torch.cuda.get_device_name(device))
    if device.type == "cpu":
        return measured_matmul_tflops(dtype)
    return 0.0


def measured_matmul_tflops(dtype: torch.dtype, size: int = 1024, repeats: int = 5) -> float:
    """Best TFLOP/s of a (size x size) @ (size x size) matmul in `dtype` on the CPU, after a warm-up."""
    a = torch.randn(size, size, generator=torch.Generator().manual_seed(0)).to(dtype)
    b = a.t().contiguous()
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e12


class Throughput:
    """Rates since the previous `rates()` call: samples/s and tokens/s (all ranks), TFLOP/s and MFU
    (per device). Feed it each micro-batch with `add`."""

    def __init__(self, world_size: int, peak: float) -> None:
        self.world_size, self.peak = world_size, peak
        self.restart()

    def restart(self) -> None:
        """Drop the counts and start the clock now."""
        self.start = time.perf_counter()
        self.samples = self.tokens = self.positions = 0
        self.flops = 0.0

    def add(self, samples: int, tokens: int, positions: int, flops: float) -> None:
        """One micro-batch of this rank: pairs, non-padding tokens, padded positions, FLOPs."""
        self.samples += samples
        self.tokens += tokens
        self.positions += positions
        self.flops += flops

    def add_batch(self, batch: dict[str, Any], flops: float) -> None:
        """One collated micro-batch of this rank that took `flops` (mmkd.flops.MicroStepFlops)."""
        real, padded = batch_tokens(batch)
        self.add(len(batch["lang"]), real, padded, flops)

    def rates(self) -> dict[str, float]:
        """Scalars since the last call (this rank's counts scaled by the world size), then reset."""
        seconds = max(time.perf_counter() - self.start, 1e-9)
        tflops = self.flops / seconds / 1e12
        rates = {
            "samples_per_s": self.samples * self.world_size / seconds,
            "tokens_per_s": self.tokens * self.world_size / seconds,
            "tflops": tflops,
            "padding_efficiency": self.tokens / max(self.positions, 1),
        }
        if self.peak > 0:
            rates["mfu"] = tflops / self.peak
        self.restart()
        return rates


class StepMonitor:
    """DeepSpeed's monitor (the TensorBoard, CSV, W&B or Comet writers its JSON enables) with every event in
    one namespace against optimizer steps: DeepSpeed's own events ("Train/Samples/<name>", x = samples)
    become "train/<name>" at `step()`, its lr is dropped (module docstring), mmkd's events pass unchanged.
    Everything else (`enabled`, `tb_monitor`, ...) is the wrapped monitor's."""

    DEEPSPEED_PREFIX = "Train/Samples/"
    DROPPED = ("lr",)  # DeepSpeed's names mmkd writes itself

    def __init__(self, monitor: MonitorMaster, step: Callable[[], int]) -> None:
        self.monitor, self.step = monitor, step

    def write_events(self, events: list[tuple[str, float, int]]) -> None:
        """Write (tag, value, x) events, DeepSpeed's moved to (train/<name>, value, step())."""
        kept = []
        for tag, value, x in events:
            name = tag.removeprefix(self.DEEPSPEED_PREFIX)
            if name == tag:
                kept.append((tag, value, x))
            elif name not in self.DROPPED:
                kept.append((f"train/{name}", value, self.step()))
        if kept:
            self.monitor.write_events(kept)

    def __getattr__(self, name: str) -> Any:
        if name == "monitor":  # not yet set (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.monitor, name)


def own_monitor(engine: DeepSpeedEngine) -> None:
    """Wrap `engine`'s monitor in a StepMonitor on engine.global_steps (once, after deepspeed.initialize):
    DeepSpeed writes its events at the step's end, after counting the step."""
    engine.monitor = StepMonitor(engine.monitor, lambda: engine.global_steps)


def write_scalars(engine: DeepSpeedEngine, prefix: str, scalars: dict[str, float]) -> None:
    """Write `prefix/name` scalars at the optimizer step (engine.global_steps: the steps done, restored on
    resume) through DeepSpeed's monitor (rank 0 only)."""
    if engine.monitor.enabled and engine.global_rank == 0:
        engine.monitor.write_events([(f"{prefix}/{name}", float(value), engine.global_steps)
                                     for name, value in scalars.items()])


def write_config_text(engine: DeepSpeedEngine, config: dict[str, Any]) -> None:
    """The run's configuration as TensorBoard text `run/config` (a JSON block), rank 0, when the
    DeepSpeed JSON enables TensorBoard."""
    writer = getattr(getattr(engine.monitor, "tb_monitor", None), "summary_writer", None)
    if engine.monitor.enabled and engine.global_rank == 0 and writer is not None:
        text = json.dumps(config, indent=2, sort_keys=True, default=str)
        writer.add_text("run/config", "\n".join("    " + line for line in text.splitlines()), engine.global_steps)
        writer.flush()


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm:
    """The step progress bar; shown on rank 0 only (`enabled`)."""
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
