"""Engine building blocks that need no process group: DeepSpeed JSON checks and optimizer choice."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from mmkd.engine import build_optimizer, emulated_bf16_warning, load_ds_config, with_run_values
from mmkd.errors import MMKDError


def apex_installed() -> bool:
    try:
        return importlib.util.find_spec("apex.optimizers") is not None
    except ImportError:  # a top-level "apex" that is not NVIDIA's
        return False


@pytest.fixture
def parameters() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(3, 2).parameters())


def test_without_an_optimizer_block_the_client_optimizer_is_torch_adamw(parameters):
    ds_config = {"scheduler": {"type": "WarmupDecayLR", "params": {"warmup_max_lr": 1e-4}}}
    optimizer, config = build_optimizer(ds_config, parameters)
    assert type(optimizer) is torch.optim.AdamW
    assert config == ds_config
    with pytest.raises(MMKDError, match=r"neither an \"optimizer\" nor a \"scheduler\" block"):
        build_optimizer({"train_micro_batch_size_per_gpu": 1}, parameters)


def test_a_deepspeed_optimizer_type_is_left_to_deepspeed(parameters):
    ds_config = {"optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}}}
    assert build_optimizer(ds_config, parameters) == (None, ds_config)


@pytest.mark.skipif(apex_installed(), reason="NVIDIA apex is installed here")
@pytest.mark.parametrize("kind", ["apex_fused_lamb", "apex_fused_adam"])
def test_apex_optimizer_without_apex_says_how_to_build_it(kind, parameters):
    with pytest.raises(MMKDError, match=rf"optimizer {kind}: NVIDIA apex is not installed.*github.com/NVIDIA/apex"
                                        r".*do not pip install apex"):
        build_optimizer({"optimizer": {"type": kind, "params": {"lr": 1e-3}}}, parameters)


def test_apex_lamb_under_zero_needs_the_untested_optimizer_switch(parameters):
    ds_config = {"optimizer": {"type": "apex_fused_lamb"}, "zero_optimization": {"stage": 2}}
    with pytest.raises(MMKDError, match=r"zero_allow_untested_optimizer"):
        build_optimizer(ds_config, parameters)


def test_load_ds_config_names_a_missing_or_broken_file(tmp_path):
    with pytest.raises(MMKDError, match=r"nothere\.json: DeepSpeed config not found"):
        load_ds_config(tmp_path / "nothere.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"train_micro_batch_size_per_gpu": 8,}')
    with pytest.raises(MMKDError, match=r"broken\.json: not valid JSON"):
        load_ds_config(broken)


def test_fp16_is_refused_on_a_cpu(tmp_path):
    path = tmp_path / "fp16.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8, "fp16": {"enabled": True}}))
    with pytest.raises(MMKDError, match=r"fp16\.json: fp16 needs a GPU; use cpu_bf16_zero2 \(bf16\)"):
        load_ds_config(path)


def test_run_values_fill_only_what_the_json_leaves_open():
    ds_config = {"scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": "auto"}},
                 "tensorboard": {"enabled": True, "job_name": "mmkd"}}
    filled = with_run_values(ds_config, tensorboard_dir="out/tb", total_steps=77)
    assert filled["scheduler"]["params"]["total_num_steps"] == 77
    assert filled["tensorboard"]["output_path"] == "out/tb"
    assert ds_config["scheduler"]["params"]["total_num_steps"] == "auto"  # the input is not modified
    explicit = {"scheduler": {"params": {"total_num_steps": 5}}, "tensorboard": {"output_path": "mine"}}
    assert with_run_values(explicit, tensorboard_dir="out/tb", total_steps=77) == explicit


def test_bf16_is_refused_on_a_device_without_it(tmp_path, monkeypatch):
    from deepspeed.accelerator import get_accelerator

    monkeypatch.setattr(type(get_accelerator()), "is_bf16_supported", lambda self: False)
    path = tmp_path / "bf16.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8, "bf16": {"enabled": True}}))
    with pytest.raises(MMKDError, match=r"bf16\.json: bf16 is not supported on this cpu device; use "
                                        r"ds_configs/gpu_fp16_zero1\.json \(fp16\)"):
        load_ds_config(path)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_bf16_is_warned_about(monkeypatch, native):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    warning = emulated_bf16_warning(torch.bfloat16, torch.device("cpu"))
    assert (warning is None) == native
    if not native:
        assert "no native bf16 matrix multiply" in warning and "cpu_fp32_zero2" in warning
    assert emulated_bf16_warning(torch.float32, torch.device("cpu")) is None
    assert emulated_bf16_warning(torch.bfloat16, torch.device("meta")) is None
