"""Optimizer steps that changed nothing: counted, reported, and a run of them stops training.

A step is skipped when its loss was not finite on some rank or DeepSpeed did not apply the update
(fp16 overflow, bf16 non-finite gradients: `engine.was_step_applied()` is False); a step at lr 0
is applied but changes no weight either. After `limit` skipped steps in a row the run stops with
an MMKDError (the weights can only be NaN or unchanged from there on), and a run in which no step
changed the weights is not exported as if it were trained.
"""

from __future__ import annotations

from mmkd.errors import MMKDError


class StepHealth:
    """Counts of skipped steps (in a row and in all) and of steps that changed the weights.

    `changed_before`: steps that changed the weights in the runs this one resumes.
    """

    def __init__(self, limit: int, changed_before: int = 0) -> None:
        self.limit = limit
        self.in_a_row = self.skipped = 0
        self.changed = changed_before

    def record(self, step: int, skipped: bool, lr: float) -> None:
        """Count optimizer step `step`; raises MMKDError at the `limit`-th skipped step in a row."""
        if not skipped:
            self.in_a_row = 0
            self.changed += lr > 0
            return
        self.in_a_row += 1
        self.skipped += 1
        if self.in_a_row >= self.limit:
            raise MMKDError(f"step {step}: {self.in_a_row} optimizer steps in a row had a non-finite loss or were "
                            f"skipped by DeepSpeed (overflow); stopping (train config key max_skipped_steps). "
                            "Check the loss weights and temperatures, lower the lr in the DeepSpeed JSON, or use bf16")

    def message(self, step: int) -> str:
        """The console line of a skipped step."""
        return (f"step {step}: non-finite loss or skipped update ({self.in_a_row} in a row, {self.skipped} in all; "
                f"the run stops at {self.limit} in a row)")
