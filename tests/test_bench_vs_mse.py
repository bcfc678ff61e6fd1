"""scripts/bench_vs_mse.py: both arms' budget is the recipe as the mmkd arm resolves it; the transfer column, the
catalog check over several fine-tuning seeds, as mean and range."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from mmkd.train_config import TrainConfig

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


def test_both_arms_take_the_batch_and_warm_up_of_the_recipe_with_its_ds_changes_and_the_mmkd_args(bench, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("ds_config: cpu_fp32_zero2_micro16\nds: {train_micro_batch_size_per_gpu: 24}\nalpha: 0.3\n")
    args = argparse.Namespace(run=str(tmp_path / "run"), recipe=str(recipe), mmkd_args="")
    cfg = bench.recipe_config(args)
    assert bench.global_batch(cfg) == 24 and cfg.alpha == 0.3  # the JSON alone says 16
    args.mmkd_args = "--ds.train_micro_batch_size_per_gpu=32 --ds.scheduler.params.warmup_num_steps=50 --alpha=0.5"
    cfg = bench.recipe_config(args)
    assert bench.global_batch(cfg) == 32 and cfg.alpha == 0.5
    assert bench.recipe_ds_config(cfg)["scheduler"]["params"]["warmup_num_steps"] == 50
    assert bench.global_batch(TrainConfig(ds_config="cpu_fp32_zero2_micro16")) == 16


def test_a_single_override_after_mmkd_args_is_its_value_not_an_option(bench):
    assert bench.attach_mmkd_args(["--run", "r", "--mmkd-args", "--alpha=0.5", "--minutes", "1"]) == [
        "--run", "r", "--mmkd-args=--alpha=0.5", "--minutes", "1"]
    assert bench.attach_mmkd_args(["--mmkd-args=--alpha=0.5"]) == ["--mmkd-args=--alpha=0.5"]


@pytest.mark.parametrize("mmkd_args, says", [
    ("--alpah=0.5", "alpah"),
    ("--ds.train_micro_batch_size_per_gpu=0", "train_micro_batch_size_per_gpu"),
])
def test_a_bad_override_is_refused_before_either_arm_trains(bench, tmp_path, capsys, mmkd_args, says):
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as stop:
        bench.main(["--run", str(tmp_path / "run"), "--out", str(out), f"--mmkd-args={mmkd_args}"])
    assert stop.value.code == 2 and says in capsys.readouterr().err
    assert not out.exists()


def test_the_mse_arm_at_its_own_batch_warms_up_over_the_recipes_warm_up_pairs(bench):
    cfg = TrainConfig(ds_config="cpu_fp32_zero2_micro64")  # 64 pairs per step, warm-up 25 steps
    assert bench.mse_batch_and_warmup(cfg, 0) == (64, 25)
    assert bench.mse_batch_and_warmup(cfg, 16) == (16, 100)  # 1,600 pairs either way
    assert bench.mse_batch_and_warmup(cfg, 48) == (48, 33)


def test_the_table_names_each_arms_pairs_per_step(bench):
    scores = {model: {"x2y": 0.5, "y2x": 0.25} for model in bench.MODELS}
    retrieval = {"languages": {"xh": {"group": "low", "models": scores}}}
    results = {"arms": {"mse": {"batch": 16, "pairs": 160, "seconds": 60.0},
                        "mmkd": {"batch": 64, "pairs": 640, "seconds": 60.0}},
               "retrieval": {"test": retrieval, "out_of_domain": retrieval}, "transfer": {}}
    rows = {line.split(" | ")[0].lstrip("| "): line for line in bench.table(results).splitlines()[2:]}
    assert list(rows) == ["teacher", "before", "mse, 16 per step", "mmkd, 64 per step"]
    assert "| 160 | 60 |" in rows["mse, 16 per step"] and "50.0 / 25.0" in rows["teacher"]


def test_a_negative_mse_batch_is_refused_before_either_arm_trains(bench, tmp_path, capsys):
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as stop:
        bench.main(["--run", str(tmp_path / "run"), "--out", str(out), "--mse-batch=-4"])
    assert stop.value.code == 2 and "--mse-batch" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_directory_without_the_pipelines_inputs_is_refused_naming_what_is_missing(bench, tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "bench"
    (run / "corpus").mkdir(parents=True)
    (run / "student").mkdir()
    with pytest.raises(SystemExit) as stop:
        bench.main(["--run", str(run), "--out", str(out)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "no teacher_cache_train, teacher_cache_dev" in err and "mmkd pipeline" in err
    assert not out.exists()
