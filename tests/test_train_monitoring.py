"""Throughput, FLOP and MFU arithmetic, and the small pieces of the training loop that need no engine."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from mmkd import monitoring
from mmkd.train import dev_plan


def test_batch_tokens_counts_the_three_student_inputs():
    batch = {
        "tlm_input_ids": torch.zeros(2, 7, dtype=torch.long),
        "tlm_attention_mask": torch.tensor([[1] * 7, [1] * 4 + [0] * 3]),
        "x_input_ids": torch.zeros(2, 3, dtype=torch.long),
        "x_attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
        "y_input_ids": torch.zeros(2, 4, dtype=torch.long),
        "y_attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
    }
    assert monitoring.batch_tokens(batch) == (11 + 5 + 6, 14 + 6 + 8)


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA A100-SXM4-40GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0), ("NVIDIA H200", 989.0),
    ("NVIDIA L40S", 362.0), ("Tesla T4", 0.0),
])
def test_gpu_peak_comes_from_the_exact_device_name(name, peak):
    assert monitoring.gpu_peak_tflops(name) == peak


def test_throughput_rates_scale_by_world_size_and_peak(monkeypatch):
    clock = iter([100.0, 102.0, 102.0])
    monkeypatch.setattr(monitoring.time, "perf_counter", lambda: next(clock))
    meter = monitoring.Throughput(world_size=4, peak=10.0)
    meter.add(samples=8, tokens=300, positions=400, flops=3e12)
    meter.add(samples=8, tokens=100, positions=400, flops=1e12)
    rates = meter.rates()  # 2 s
    assert rates == pytest.approx({"samples_per_s": 16 * 4 / 2, "tokens_per_s": 400 * 4 / 2, "tflops": 2.0,
                                   "mfu": 0.2, "padding_efficiency": 0.5})
    assert meter.samples == meter.tokens == 0 and meter.start == 102.0


def test_no_mfu_without_a_peak(monkeypatch):
    clock = iter([0.0, 1.0, 1.0])
    monkeypatch.setattr(monitoring.time, "perf_counter", lambda: next(clock))
    meter = monitoring.Throughput(world_size=1, peak=0.0)
    meter.add(1, 1, 1, 1e12)
    assert "mfu" not in meter.rates()


def test_peak_tflops_prefers_the_configured_value_and_measures_a_cpu():
    cpu = torch.device("cpu")
    assert monitoring.peak_tflops(123.0, torch.bfloat16, cpu) == 123.0
    assert monitoring.peak_tflops(0.0, torch.float32, cpu) > 0


@pytest.mark.parametrize("world", [1, 2, 3])
def test_dev_plan_gives_every_rank_as_many_batches_and_covers_each_batch_once(world):
    langs = ["de"] * 5 + ["fr"] * 2 + ["es"] * 7
    plans = [dev_plan(langs, micro=3, per_language=0, rank=rank, world=world) for rank in range(world)]
    assert len({len(plan) for plan in plans}) == 1
    real = [(lang, tuple(rows)) for plan in plans for lang, rows, weight in plan if weight > 0]
    assert Counter(real) == Counter({("de", (0, 1, 2)): 1, ("de", (3, 4)): 1, ("es", (7, 8, 9)): 1,
                                     ("es", (10, 11, 12)): 1, ("es", (13,)): 1, ("fr", (5, 6)): 1})
    assert all(langs[row] == lang for plan in plans for lang, rows, _ in plan for row in rows)


def test_dev_plan_caps_batches_per_language():
    plan = dev_plan(["de"] * 10 + ["fr"] * 10, micro=2, per_language=1, rank=0, world=1)
    assert plan == [("de", [0, 1], 1.0), ("fr", [10, 11], 1.0)]


def test_add_batch_counts_a_collated_batch_like_add():
    batch = {"lang": ["de", "fr"], "tlm_input_ids": torch.zeros(2, 5, dtype=torch.long),
             "tlm_attention_mask": torch.tensor([[1] * 5, [1] * 3 + [0] * 2]),
             "x_input_ids": torch.zeros(2, 2, dtype=torch.long), "x_attention_mask": torch.ones(2, 2),
             "y_input_ids": torch.zeros(2, 3, dtype=torch.long), "y_attention_mask": torch.ones(2, 3)}
    meter = monitoring.Throughput(world_size=1, peak=0.0)
    meter.add_batch(batch, flops=5e9)
    assert (meter.samples, meter.tokens, meter.positions, meter.flops) == (2, 8 + 4 + 6, 10 + 4 + 6, 5e9)


def test_global_batch_note_says_whether_the_global_batch_is_kept():
    from mmkd.train import global_batch_note

    assert "kept on any number of ranks" in global_batch_note({"train_batch_size": 256}, 256)
    assert "changes with the number of ranks" in global_batch_note({"gradient_accumulation_steps": 2}, 32)


class RecordingMonitor:
    """Stands in for DeepSpeed's MonitorMaster: enabled, records the events it is given."""

    enabled = True

    def __init__(self) -> None:
        self.events: list[tuple[str, float, int]] = []

    def write_events(self, events):
        self.events.extend(events)


def test_step_monitor_puts_every_event_under_train_against_optimizer_steps():
    engine = type("Engine", (), {"global_rank": 0, "global_steps": 7, "global_samples": 112})()
    engine.monitor = recorded = RecordingMonitor()
    monitoring.own_monitor(engine)
    # as DeepSpeed's engine.step() writes them: x = samples
    engine.monitor.write_events([("Train/Samples/lr", 1e-4, 112), ("Train/Samples/loss_scale", 1024.0, 112)])
    monitoring.write_scalars(engine, "train", {"loss": 2.5, "lr": 1e-4})
    assert recorded.events == [("train/loss_scale", 1024.0, 7), ("train/loss", 2.5, 7), ("train/lr", 1e-4, 7)]
    assert engine.monitor.enabled
