"""The DeepSpeed JSON is checked before anything is built (mmkd.ds_config, engine.load_ds_config):
keys DeepSpeed does not know, "auto" values, batch sizes that do not fit the world, lr 0."""

from __future__ import annotations

import json
from pathlib import Path

import deepspeed.comm
import pytest
from deepspeed.runtime.config import DeepSpeedConfig

from mmkd.ds_config import check_batch_sizes, check_known_keys, resolve_auto
from mmkd.engine import load_ds_config, with_run_values
from mmkd.errors import MMKDError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "ds_configs"
BASE = json.loads((CONFIG_DIR / "cpu_bf16_zero2.json").read_text())


def written(tmp_path: Path, change, name: str = "mine.json") -> Path:
    """cpu_bf16_zero2.json with `change(config)` applied, written to tmp_path/name."""
    config = json.loads(json.dumps(BASE))
    change(config)
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.json")), ids=lambda path: path.name)
def test_every_shipped_config_passes(path):
    config = resolve_auto(json.loads(path.read_text()), path)
    check_known_keys(config, path)


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.update(gradient_accumulation_step=4),
     r"unknown DeepSpeed key 'gradient_accumulation_step' \(not a top-level key DeepSpeed reads\).*"
     r"did you mean gradient_accumulation_steps"),
    (lambda c: c.update(zero_optimisation=c.pop("zero_optimization")),
     r"unknown DeepSpeed key 'zero_optimisation'.*did you mean zero_optimization"),
    (lambda c: c["zero_optimization"].update(overlap_com=False),
     r"'zero_optimization\.overlap_com'.*did you mean zero_optimization\.overlap_comm"),
    (lambda c: c["zero_optimization"].update(offload_optimizer={"device": "cpu", "pin_memroy": True}),
     r"'zero_optimization\.offload_optimizer\.pin_memroy'.*"
     r"did you mean zero_optimization\.offload_optimizer\.pin_memory"),
    (lambda c: c["bf16"].update(enable=True), r"'bf16\.enable'.*did you mean bf16\.enabled"),
    (lambda c: c["tensorboard"].update(outputpath="tb"),
     r"'tensorboard\.outputpath'.*did you mean tensorboard\.output_path"),
    (lambda c: c.update(flops_profiler={"enabled": True, "profile_stp": 2}),
     r"'flops_profiler\.profile_stp'.*did you mean flops_profiler\.profile_step"),
    (lambda c: c["scheduler"]["params"].update(warmup_steps=10),
     r"'scheduler\.params\.warmup_steps' \(not an argument of DeepSpeed's WarmupDecayLR\).*"
     r"did you mean scheduler\.params\.warmup_num_steps"),
    (lambda c: c["scheduler"].update(type="WarmupDecay"),
     r"unknown DeepSpeed key \"scheduler\.type='WarmupDecay'\" \(not a DeepSpeed scheduler\).*"
     r"did you mean WarmupDecayLR"),
    (lambda c: c["optimizer"].update(type="AdamWW"),
     r"\(not an optimizer DeepSpeed or mmkd builds\).*did you mean adamw"),
    (lambda c: c["zero_optimization"].update(stage=4), r"DeepSpeed refuses zero_optimization\.stage=4"),
])
def test_misspelled_keys_are_refused_with_file_and_close_match(tmp_path, change, message):
    with pytest.raises(MMKDError, match=r"^.*mine\.json: .*" + message):
        load_ds_config(written(tmp_path, change))


@pytest.mark.parametrize("key", ["train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "optimizer.params.lr",
                                 "scheduler.params.warmup_num_steps", "gradient_clipping",
                                 "zero_optimization.reduce_bucket_size"])
def test_auto_values_mmkd_has_no_key_for_are_refused_by_name(tmp_path, key):
    def change(config):
        *parents, last = key.split(".")
        block = config
        for parent in parents:
            block = block[parent]
        block[last] = "auto"

    with pytest.raises(MMKDError, match=rf"mine\.json: {key} is \"auto\", which mmkd cannot resolve"):
        load_ds_config(written(tmp_path, change))


def test_auto_values_resolve_as_hf_trainer_resolves_them(tmp_path, monkeypatch):
    """train_batch_size: micro x accumulation x world; warmup_max_lr: the optimizer's lr; warmup_min_lr: 0;
    total_num_steps: the run's steps."""
    def change(config):
        config["train_batch_size"] = "auto"
        config["scheduler"]["params"].update(warmup_max_lr="auto", warmup_min_lr="auto", total_num_steps="auto")

    config = with_run_values(load_ds_config(written(tmp_path, change)), tensorboard_dir="tb", total_steps=70)
    monkeypatch.setattr(deepspeed.comm, "get_rank", lambda *args, **kwargs: 0)
    monkeypatch.setattr(deepspeed.comm, "get_world_size", lambda *args, **kwargs: 4)
    resolved = DeepSpeedConfig(config)
    assert resolved.train_batch_size == 8 * 2 * 4
    assert resolved.scheduler_params["warmup_max_lr"] == BASE["optimizer"]["params"]["lr"]
    assert resolved.scheduler_params["warmup_min_lr"] == 0.0
    assert resolved.scheduler_params["total_num_steps"] == 70


@pytest.mark.parametrize("world_size", [1, 2])
def test_batch_sizes_that_do_not_fit_the_world_name_file_and_values(world_size, monkeypatch):
    monkeypatch.setattr(deepspeed.comm, "get_rank", lambda *args, **kwargs: 0)
    monkeypatch.setattr(deepspeed.comm, "get_world_size", lambda *args, **kwargs: world_size)
    config = {**BASE, "train_batch_size": 32, "train_micro_batch_size_per_gpu": 4}
    with pytest.raises(MMKDError, match=rf"mine\.json: batch sizes do not fit {world_size} rank\(s\): "
                                        r"train_batch_size=32, train_micro_batch_size_per_gpu=4, "
                                        r"gradient_accumulation_steps=2.*"
                                        rf"32 != 4 \* 2 \* {world_size}"):
        check_batch_sizes(config, "mine.json", world_size)
    assert check_batch_sizes({**config, "train_batch_size": 8 * world_size}, "mine.json", world_size) == (4, 2)


@pytest.mark.parametrize("key", ["train_micro_batch_size_per_gpu", "gradient_accumulation_steps"])
def test_a_batch_size_below_1_is_refused_as_such_not_as_a_mismatch(key, monkeypatch):
    monkeypatch.setattr(deepspeed.comm, "get_rank", lambda *args, **kwargs: 0)
    monkeypatch.setattr(deepspeed.comm, "get_world_size", lambda *args, **kwargs: 1)
    config = {key: value for key, value in BASE.items() if key != "train_batch_size"}
    with pytest.raises(MMKDError, match=rf"mine\.json: batch sizes must be >= 1: .*{key}=0") as refusal:
        check_batch_sizes({**config, key: 0}, "mine.json", 1)
    assert "drop train_batch_size" not in str(refusal.value)


@pytest.mark.parametrize("value", ["abc", "64", 6.4, True])
def test_a_batch_size_that_is_not_an_integer_is_refused_naming_the_key(value):
    """`--ds.train_micro_batch_size_per_gpu=abc` reached DeepSpeed as a string and failed on a comparison."""
    config = {**BASE, "train_micro_batch_size_per_gpu": value}
    for check in (lambda: check_batch_sizes(config, "mine.json", 1), lambda: check_known_keys(config, "mine.json")):
        with pytest.raises(MMKDError, match=rf"mine\.json: train_micro_batch_size_per_gpu must be an integer number "
                                            rf"of samples, got {value!r}"):
            check()


@pytest.mark.parametrize(("change", "key"), [
    (lambda c: c["optimizer"]["params"].update(lr=0.0), r"optimizer\.params\.lr=0\.0"),
    (lambda c: c["optimizer"]["params"].update(lr=-1e-4), r"optimizer\.params\.lr=-0\.0001"),
    (lambda c: c["scheduler"]["params"].update(warmup_max_lr=0), r"scheduler\.params\.warmup_max_lr=0"),
])
def test_an_lr_that_trains_nothing_is_refused(tmp_path, change, key):
    with pytest.raises(MMKDError, match=rf"mine\.json: {key} trains nothing"):
        load_ds_config(written(tmp_path, change))


def test_the_cli_prints_one_error_line_before_building_anything(tmp_path, capsys):
    from mmkd.cli import main

    typo = written(tmp_path, lambda c: c.update(gradient_accumulation_step=4))
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"corpus": "c", "student": "s", "live_teacher": True, "ds_config": str(typo),
                                  "output_dir": str(tmp_path / "out")}))
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mmkd train: error: {typo}: unknown DeepSpeed key 'gradient_accumulation_step' (not a top-level "
                   "key DeepSpeed reads); did you mean gradient_accumulation_steps, managed_gradient_accumulation, "
                   "gradient_clipping?"]


def test_deepspeeds_other_refusals_are_not_called_batch_sizes(monkeypatch):
    """DeepSpeedConfig's sanity checks run after the batch sizes: their AssertionError keeps its own words."""
    monkeypatch.setattr(deepspeed.comm, "get_rank", lambda *args, **kwargs: 0)
    monkeypatch.setattr(deepspeed.comm, "get_world_size", lambda *args, **kwargs: 1)
    config = {**BASE, "bf16": {"enabled": True, "bf16_optimizer_states": True}}
    with pytest.raises(MMKDError, match=r"mine\.json: DeepSpeed refuses this config: bf16_optimizer_states requires "
                                        r"bf16_master_weights_and_grads"):
        check_batch_sizes(config, "mine.json", 1)
    with pytest.raises(MMKDError, match=r"mine\.json: DeepSpeed refuses this config: bf16_optimizer_states requires"):
        check_known_keys(config, "mine.json")


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["optimizer"]["params"].update(weight_decy=0.01),
     r"'optimizer\.params\.weight_decy' \(not an argument of the optimizers DeepSpeed builds for AdamW\).*"
     r"did you mean optimizer\.params\.weight_decay"),
    (lambda c: c["optimizer"].update(type="Lamb", params={"lr": 1e-3, "max_coef": 10}),
     r"'optimizer\.params\.max_coef'.*did you mean optimizer\.params\.max_coeff"),
    (lambda c: c["optimizer"].update(type="SGD", params={"lr": 1e-3, "momentun": 0.9}),
     r"'optimizer\.params\.momentun'.*did you mean optimizer\.params\.momentum"),
    (lambda c: c["optimizer"].update(parms={}), r"'optimizer\.parms'.*did you mean optimizer\.params"),
])
def test_misspelled_optimizer_params_are_refused(tmp_path, change, message):
    with pytest.raises(MMKDError, match=r"mine\.json: unknown DeepSpeed key " + message):
        load_ds_config(written(tmp_path, change))


def test_fp16_and_bf16_together_are_refused():
    config = json.loads((CONFIG_DIR / "gpu_fp16_zero1.json").read_text())
    config["bf16"] = {"enabled": True}
    with pytest.raises(MMKDError, match=r"mine\.json: DeepSpeed refuses this config: bfloat16 and fp16 modes cannot be "
                                        r"simultaneously enabled"):
        check_known_keys(config, "mine.json")
