"""Every shipped DeepSpeed config: parses with DeepSpeed's own config class, batch arithmetic holds,
and it carries what mmkd.train relies on (monitor, clipping, scheduler, precision)."""

from __future__ import annotations

import json
from pathlib import Path

import deepspeed.comm
import pytest
from deepspeed.runtime.config import DeepSpeedConfig

from mmkd.engine import with_run_values

CONFIG_DIR = Path(__file__).resolve().parents[1] / "ds_configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.json"))
REQUIRED = {"cpu_bf16_zero2.json", "cpu_fp32_zero2.json", "gpu_bf16_zero2.json", "gpu_fp16_zero1.json",
            "gpu_bf16_zero3.json", "gpu_bf16_zero3_offload.json"}


def resolved(path: Path, world_size: int, monkeypatch) -> DeepSpeedConfig:
    """DeepSpeedConfig of the file, as mmkd.train fills it, seen from a run of `world_size` ranks."""
    monkeypatch.setattr(deepspeed.comm, "get_rank", lambda *args, **kwargs: 0)
    monkeypatch.setattr(deepspeed.comm, "get_world_size", lambda *args, **kwargs: world_size)
    config = with_run_values(json.loads(path.read_text()), tensorboard_dir="tb", total_steps=1000)
    return DeepSpeedConfig(config)


def test_the_required_configs_are_shipped():
    assert REQUIRED <= {path.name for path in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
@pytest.mark.parametrize("world_size", [1, 2, 8])
def test_global_batch_is_micro_times_accumulation_times_world(path, world_size, monkeypatch):
    """A config that states train_batch_size keeps it on every world size (accumulation adjusts);
    one that states the accumulation keeps that instead (the global batch grows with the world)."""
    config = resolved(path, world_size, monkeypatch)
    raw = json.loads(path.read_text())
    assert config.train_micro_batch_size_per_gpu == raw["train_micro_batch_size_per_gpu"]
    assert config.train_batch_size == (config.train_micro_batch_size_per_gpu * config.gradient_accumulation_steps
                                       * world_size)
    if "train_batch_size" in raw:
        assert config.train_batch_size == raw["train_batch_size"]
    else:
        assert config.gradient_accumulation_steps == raw["gradient_accumulation_steps"]


@pytest.mark.parametrize("name", ["gpu_bf16_zero2.json", "gpu_bf16_zero3.json", "gpu_bf16_zero3_offload.json",
                                  "gpu_fp16_zero1.json"])
def test_gpu_configs_keep_the_papers_global_batch_on_any_world_size(name, monkeypatch):
    for world_size, accumulation in ((1, 8), (4, 2), (8, 1)):
        config = resolved(CONFIG_DIR / name, world_size, monkeypatch)
        assert (config.train_batch_size, config.gradient_accumulation_steps) == (256, accumulation)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_monitor_clipping_scheduler_and_optimizer(path, monkeypatch):
    config = resolved(path, 2, monkeypatch)
    assert config.monitor_config.tensorboard.enabled
    assert config.monitor_config.tensorboard.output_path == "tb"
    assert config.gradient_clipping > 0
    assert config.scheduler_name == "WarmupDecayLR"
    assert config.scheduler_params["total_num_steps"] == 1000
    assert "warmup_max_lr" not in json.loads(path.read_text())["scheduler"]["params"]  # one lr: the optimizer's
    assert config.scheduler_params["warmup_max_lr"] == config.optimizer_params["lr"]
    assert config.optimizer_params["lr"] > 0


def test_precision_and_zero_stage_match_the_file_names(monkeypatch):
    for path in CONFIGS:
        config = resolved(path, 2, monkeypatch)
        precision, stage = path.stem.split("_")[1], int(path.stem.split("_zero")[1][0])
        assert config.bfloat16_config.enabled == (precision == "bf16"), path.name
        assert config.float16_config.enabled == (precision == "fp16"), path.name
        assert config.zero_optimization_stage == stage, path.name


def test_fp16_config_uses_dynamic_loss_scaling(monkeypatch):
    config = resolved(CONFIG_DIR / "gpu_fp16_zero1.json", 2, monkeypatch)
    assert config.float16_config.enabled
    assert config.float16_config.loss_scale == 0  # 0 = dynamic
    assert config.float16_config.initial_scale_power > 0


def test_offload_config_offloads_parameters_and_optimizer(monkeypatch):
    config = resolved(CONFIG_DIR / "gpu_bf16_zero3_offload.json", 2, monkeypatch)
    assert config.zero_config.offload_param.device == "cpu"
    assert config.zero_config.offload_optimizer.device == "cpu"


def test_cpu_configs_compile_nothing(monkeypatch):
    """torch's AdamW ("torch_adam"): DeepSpeed's CPU Adam would JIT-compile for minutes. Fused: one
    kernel over the flat fp32 partition (23.6M parameters: 24 ms a step against 266 ms for the default
    foreach AdamW on this 2-core CPU: scripts/bench_optimizer.py)."""
    names = sorted(path.name for path in CONFIG_DIR.glob("cpu_*.json"))
    assert len(names) == 6
    for name in names:
        config = resolved(CONFIG_DIR / name, 1, monkeypatch)
        assert config.optimizer_name == "adamw" and config.optimizer_params["torch_adam"] is True, name
        assert config.optimizer_params["fused"] is True, name


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_the_warmup_schedule_peaks_at_the_optimizers_lr(path):
    """DeepSpeed's WarmupDecayLR peaks at its own default (1e-3) unless told; the run must peak at the
    JSON's optimizer lr, the lr's one owner."""
    import torch
    from deepspeed.runtime import lr_schedules

    raw = json.loads(path.read_text())
    warmup = raw["scheduler"]["params"]["warmup_num_steps"]
    config = with_run_values(raw, tensorboard_dir="tb", total_steps=10 * warmup)
    lr = raw["optimizer"]["params"]["lr"]
    params = config["scheduler"]["params"]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = getattr(lr_schedules, config["scheduler"]["type"])(optimizer, **params)
    for _ in range(warmup + 1):  # from iteration -1 to warmup_num_steps, the peak
        scheduler.step()
    assert scheduler.get_lr()[0] == pytest.approx(lr, rel=1e-6)
