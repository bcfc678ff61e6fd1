"""Where a run stands in its schedule: steps or time, whichever budget runs out first.

DeepSpeed's schedulers (WarmupDecayLR, WarmupLR, WarmupCosineLR, ...) give the lr at a scheduler
iteration. Stepped by the engine alone, the lr of optimizer step k is that of iteration k - 2:
WarmupLR sets iteration -1's lr (warmup_min_lr) at construction and the engine advances it only
after each optimizer step, so with warmup_min_lr 0 the first two steps (iterations -1 and 0 of a
linear warmup) run at lr 0 and the last step runs before the schedule's end. mmkd instead sets the
iteration before every optimizer step: step k of N runs at iteration

    N x progress,   progress = max(k / N, elapsed / T)

(T = max_time_minutes; without a time bound progress = k / N), so the first step runs at the
warmup's first non-zero lr, the last step of a full run at the schedule's end value (iteration N),
and a run stopped by its time bound has warmed up and decayed as far as its time allowed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class RunBudget:
    """Progress through a run of `total_steps` optimizer steps and `max_seconds` of loop time (0 = no
    bound); `elapsed_before` seconds were spent by the runs this one resumes. `clock` is a monotonic
    clock in seconds (a fake one in tests)."""

    def __init__(self, total_steps: int, max_seconds: float, elapsed_before: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total_steps, self.max_seconds = total_steps, max_seconds
        self.elapsed_before, self.clock = elapsed_before, clock
        self.started = clock()

    def elapsed(self) -> float:
        """Loop seconds so far, those of resumed runs included."""
        return self.elapsed_before + self.clock() - self.started

    def progress(self, step: int, elapsed: float) -> float:
        """max(step / total_steps, elapsed / max_seconds), at most 1 (the module docstring)."""
        by_time = elapsed / self.max_seconds if self.max_seconds > 0 else 0.0
        return min(1.0, max(step / self.total_steps, by_time))

    def time_up(self, elapsed: float) -> bool:
        """Whether `elapsed` seconds exhaust the time bound."""
        return self.max_seconds > 0 and elapsed >= self.max_seconds

    def iteration(self, step: int, elapsed: float) -> float:
        """The scheduler iteration optimizer step `step` (1-based) runs at: total_steps x progress."""
        return self.total_steps * self.progress(step, elapsed)


def set_schedule_iteration(scheduler: Any, iteration: float) -> None:
    """Put a DeepSpeed lr scheduler at `iteration` and its lr into the optimizer (None: no scheduler).

    Every DeepSpeed scheduler's step() advances last_batch_iteration by one and writes that
    iteration's lr into the optimizer's param groups.
    """
    if scheduler is None:
        return
    scheduler.last_batch_iteration = iteration - 1
    scheduler.step()


def schedule_warnings(ds_config: dict[str, Any], total_steps: int) -> list[str]:
    """Warnings for a scheduler that cannot follow a run of `total_steps` (the JSON with the run's
    values, engine.with_run_values): a warmup longer than the run (the lr never reaches its peak nor
    decays), a total_num_steps other than the run's (the schedule ends before or after the run)."""
    params = ds_config.get("scheduler", {}).get("params", {})
    warnings = []
    warmup, total = params.get("warmup_num_steps"), params.get("total_num_steps")
    if isinstance(warmup, int) and warmup > total_steps:
        warnings.append(f"warmup_num_steps {warmup} in the DeepSpeed JSON is more than the run's "
                        f"{total_steps} steps: the lr never reaches its peak nor decays")
    if isinstance(total, int) and total != total_steps:
        warnings.append(f"total_num_steps {total} in the DeepSpeed JSON is not the run's {total_steps} "
                        "steps: the schedule does not end with the run (\"auto\" makes them the same)")
    return warnings
