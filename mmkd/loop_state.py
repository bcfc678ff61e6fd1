"""Where a training run stands between optimizer steps: what a checkpoint records to resume exactly."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class LoopState:
    """The training loop's state after `step` optimizer steps; a checkpoint's manifest stores it under
    "loop" with these keys (mmkd/checkpointing.py)."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epoch of the next training micro-batch
    consumed: int = 0  # samples of that epoch handed out so far, all ranks
    changed_steps: int = 0  # steps that changed the weights (mmkd.step_health)
    train_seconds: float = 0.0  # loop time of this run and the runs it resumes (mmkd.schedule)

    @classmethod
    def from_manifest(cls, loop: dict[str, Any]) -> LoopState:
        """The state a manifest's "loop" records. Older checkpoints lack changed_steps (then all their
        steps changed the weights) and train_seconds (then 0)."""
        return cls(step=loop["step"], epoch=loop["epoch"], consumed=loop["consumed"],
                   changed_steps=loop.get("changed_steps", loop["step"]),
                   train_seconds=loop.get("train_seconds", 0.0))

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's "loop": {step, epoch, consumed, changed_steps, train_seconds}."""
        return dataclasses.asdict(self)
