"""The lr schedule follows the run's budget (mmkd.schedule): step k of N runs at scheduler iteration
N x max(k / N, elapsed / T), on DeepSpeed's own WarmupDecayLR; time comes from a fake clock."""

from __future__ import annotations

import pytest
import torch
from deepspeed.runtime.lr_schedules import WarmupDecayLR

from mmkd.schedule import RunBudget, schedule_warnings, set_schedule_iteration

LR = 1e-4


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scheduler(total_steps: int, warmup: int) -> WarmupDecayLR:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    return WarmupDecayLR(optimizer, total_num_steps=total_steps, warmup_min_lr=0.0, warmup_max_lr=LR,
                         warmup_num_steps=warmup, warmup_type="linear")


def lrs_per_step(budget: RunBudget, sched: WarmupDecayLR, clock: FakeClock, seconds_per_step: float) -> list[float]:
    """The lr each step runs at, stepping until the steps or the time run out (as mmkd.train does)."""
    lrs, elapsed, step = [], budget.elapsed(), 0
    while step < budget.total_steps and not budget.time_up(elapsed):
        set_schedule_iteration(sched, budget.iteration(step + 1, elapsed))
        lrs.append(sched.optimizer.param_groups[0]["lr"])
        sched.step()  # what the engine does after each optimizer step; overwritten before the next
        clock.now += seconds_per_step
        step += 1
        elapsed = budget.elapsed()
    return lrs


def test_step_budget_first_step_trains_and_last_step_runs_at_the_end_value():
    """DeepSpeed alone gives 0, 0, 5e-05, 1e-04, 7.5e-05, 5e-05 over these 6 steps."""
    clock = FakeClock()
    lrs = lrs_per_step(RunBudget(6, 0.0, clock=clock), scheduler(6, 2), clock, seconds_per_step=1.0)
    assert lrs == pytest.approx([5e-5, 1e-4, 7.5e-5, 5e-5, 2.5e-5, 0.0])


def test_time_budget_warms_up_and_decays_when_time_runs_out_first():
    """800 steps planned, the time allows 10: the schedule runs through in those 10 steps."""
    clock = FakeClock()
    budget = RunBudget(800, max_seconds=100.0, clock=clock)
    lrs = lrs_per_step(budget, scheduler(800, 100), clock, seconds_per_step=10.0)
    assert len(lrs) == 10
    # step k starts after (k - 1) x 10 s: progress max(k / 800, (k - 1) / 10)
    expected = [min(1, max(k / 800, (k - 1) / 10)) * 800 for k in range(1, 11)]
    assert lrs == pytest.approx([LR * it / 100 if it < 100 else LR * (800 - it) / 700 for it in expected])
    assert lrs[0] > 0 and max(lrs) == pytest.approx(LR * (800 - 160) / 700)  # past the warmup by step 3
    assert lrs[-1] == pytest.approx(LR * (800 - 720) / 700)
    assert budget.progress(10, budget.elapsed()) == 1.0


def test_steps_run_out_first_the_clock_changes_nothing():
    clock = FakeClock()
    slow = lrs_per_step(RunBudget(6, max_seconds=1e6, clock=clock), scheduler(6, 2), clock, seconds_per_step=1.0)
    assert slow == pytest.approx([5e-5, 1e-4, 7.5e-5, 5e-5, 2.5e-5, 0.0])


def test_a_resumed_run_continues_the_time_budget():
    clock = FakeClock()
    budget = RunBudget(100, max_seconds=50.0, elapsed_before=40.0, clock=clock)
    assert budget.progress(1, budget.elapsed()) == pytest.approx(0.8)
    clock.now += 10.0
    assert budget.time_up(budget.elapsed())


def test_a_schedule_that_cannot_follow_the_run_is_named():
    config = {"scheduler": {"type": "WarmupDecayLR", "params": {"warmup_num_steps": 100, "total_num_steps": 1000}}}
    assert schedule_warnings(config, 4) == [
        "warmup_num_steps 100 in the DeepSpeed JSON is more than the run's 4 steps: the lr never reaches "
        "its peak nor decays",
        "total_num_steps 1000 in the DeepSpeed JSON is not the run's 4 steps: the schedule does not end "
        "with the run (\"auto\" makes them the same)"]
    config["scheduler"]["params"]["total_num_steps"] = 100
    assert schedule_warnings(config, 100) == []
    assert schedule_warnings({}, 4) == []
