"""scripts/bench_vs_mse.py's transfer column: the catalog check over several fine-tuning seeds, as mean and range."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_vs_mse.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_vs_mse", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(seed: int, accuracy: float) -> dict:
    return {"settings": {"seed": seed}, "zero_shot_accuracy": accuracy, "languages": {}}


def test_the_seeds_are_averaged_and_their_range_shown(bench):
    summary = bench.over_seeds([check(0, 67.9), check(1, 63.8), check(2, 65.0)])
    assert summary["zero_shot_accuracy"] == pytest.approx((67.9 + 63.8 + 65.0) / 3)
    assert summary["seeds"] == {0: 67.9, 1: 63.8, 2: 65.0} and len(summary["runs"]) == 3
    assert bench.transfer_cell(summary) == "65.6 (63.8-67.9)"


def test_one_seed_shows_no_range_and_no_check_an_empty_cell(bench):
    assert bench.transfer_cell(bench.over_seeds([check(0, 64.34)])) == "64.3"
    assert bench.transfer_cell(None) == ""
