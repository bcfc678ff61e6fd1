"""Skipped optimizer steps (mmkd.step_health): counted, and a run of them stops the run."""

from __future__ import annotations

import pytest

from mmkd.errors import MMKDError
from mmkd.step_health import StepHealth


def test_skipped_steps_in_a_row_stop_the_run_at_the_limit():
    health = StepHealth(limit=3)
    health.record(1, skipped=True, lr=1e-4)
    health.record(2, skipped=False, lr=1e-4)  # a good step resets the run of skipped ones
    health.record(3, skipped=True, lr=1e-4)
    health.record(4, skipped=True, lr=1e-4)
    assert (health.in_a_row, health.skipped, health.changed) == (2, 3, 1)
    assert "step 4: non-finite loss or skipped update (2 in a row, 3 in all" in health.message(4)
    with pytest.raises(MMKDError, match=r"step 5: 3 optimizer steps in a row had a non-finite loss or were skipped.*"
                                        r"max_skipped_steps"):
        health.record(5, skipped=True, lr=1e-4)


def test_only_applied_steps_at_a_positive_lr_change_the_weights():
    health = StepHealth(limit=10, changed_before=4)
    health.record(5, skipped=False, lr=0.0)
    health.record(6, skipped=True, lr=1e-4)
    assert health.changed == 4
    health.record(7, skipped=False, lr=1e-4)
    assert health.changed == 5
