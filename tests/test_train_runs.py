"""Runs of mmkd.train that must end as the DeepSpeed JSON and the recipe say: the precision the JSON
names at every ZeRO stage, the lr schedule from the first to the last step, a time bound, skipped
steps, and DeepSpeed's batch-size refusal as one error line.

One process each on the tiny setup of tests/tiny_setup.py (2-layer student, 8 pairs x 2 accumulation).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tiny_setup import build_tiny, subprocess_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
LR = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, teacher_dir) -> Path:
    """The tiny setup plus warmup2.json: cpu_bf16_zero2.json with a 2-step warmup."""
    root = build_tiny(tmp_path_factory.mktemp("tiny"), teacher_dir)
    config = json.loads((REPO / "ds_configs" / "cpu_bf16_zero2.json").read_text())
    config["scheduler"]["params"]["warmup_num_steps"] = 2
    (root / "warmup2.json").write_text(json.dumps(config))
    return root


def train(tiny: Path, name: str, overrides: list[str]) -> subprocess.CompletedProcess:
    """`python -m mmkd.train` on the tiny recipe into tiny/name, without dev evaluation or export."""
    command = [sys.executable, "-m", "mmkd.train", str(tiny / "recipe.yaml"), f"--output_dir={tiny / name}",
               "--eval_batches=0", "--eval_interval=0", *overrides]
    return subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)


def scalars(out: Path) -> dict[str, list[float]]:
    """Every TensorBoard scalar of a run: {tag: values in step order}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard" / "mmkd"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [event.value for event in sorted(events.Scalars(tag), key=lambda e: e.step)]
            for tag in events.Tags()["scalars"]}


def test_parameters_seen_in_forward_have_the_jsons_dtype_at_every_zero_stage(tiny, tmp_path):
    """Before the fix ZeRO-3 bf16 trained in float32: zero.Init(module=...) does not cast."""
    precisions = ["fp32", "bf16"] + (["fp16"] if torch.cuda.is_available() else [])
    cases = [f"{stage}:{precision}" for stage in range(4) for precision in precisions]
    out = tmp_path / "dtypes.json"
    command = [sys.executable, str(REPO / "tests" / "precision_probe.py"), str(tiny / "recipe.yaml"), str(out), *cases]
    result = subprocess.run(command, cwd=REPO, env={**subprocess_env(), "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    names = {"fp32": "torch.float32", "bf16": "torch.bfloat16", "fp16": "torch.float16"}
    assert json.loads(out.read_text()) == {case: [names[case.split(":")[1]]] for case in cases}


def test_lr_per_step_first_step_trains_last_step_at_the_schedules_end(tiny):
    """WarmupDecayLR, 2 warmup steps of 6; DeepSpeed alone ran 0, 0, 5e-05, 1e-04, 7.5e-05, 5e-05."""
    result = train(tiny, "lr", [f"--ds_config={tiny / 'warmup2.json'}", "--max_steps=6", "--export=false"])
    assert result.returncode == 0, result.stderr[-4000:]
    logged = scalars(tiny / "lr")
    assert logged["train/lr"] == pytest.approx([LR / 2, LR, 0.75 * LR, LR / 2, LR / 4, 0.0])
    # one namespace: DeepSpeed's own Train/Samples/lr (written after each step: the next step's lr) is not written
    assert not any(tag.startswith("Train/") for tag in logged)
    assert "compute dtype bfloat16 (ZeRO stage 2)" in result.stdout
    assert "6 of 6 steps, stopped by max_steps; schedule at 100% (lr 0), 0 skipped steps" in result.stdout


def test_a_time_bound_run_says_how_far_it_got(tiny):
    result = train(tiny, "timed", [f"--ds_config={tiny / 'warmup2.json'}", "--max_steps=6", "--export=false",
                                   "--max_time_minutes=0.00001"])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "1 of 6 steps, stopped by max_time_minutes; schedule at 100% (lr 5e-05)" in result.stdout


def test_skipped_steps_in_a_row_stop_the_run_with_one_error_line(tiny):
    """tau_w=1e-38: every XWCL loss is infinite, every step is skipped."""
    result = train(tiny, "overflow", ["--tau_w=1e-38", "--max_steps=4", "--max_skipped_steps=2"])
    assert result.returncode == 2
    assert ("step 1: non-finite loss or skipped update (1 in a row, 1 in all; the run stops at 2 in a row)"
            in result.stdout)
    assert result.stderr.strip().splitlines()[-1] == (
        "mmkd train: error: step 2: 2 optimizer steps in a row had a non-finite loss or were skipped by DeepSpeed "
        "(overflow); stopping (train config key max_skipped_steps). Check the loss weights and temperatures, lower "
        "the lr in the DeepSpeed JSON, or use bf16")
    assert "Traceback" not in result.stderr
    assert scalars(tiny / "overflow")["train/skipped_steps"] == [1.0]
    assert not (tiny / "overflow" / "export").exists()


def test_a_run_no_step_changed_is_not_exported(tiny):
    result = train(tiny, "unchanged", ["--tau_w=1e-38", "--max_steps=2"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "mmkd train: error: no optimizer step changed the student (2 steps: 2 skipped, the others at lr 0); "
        "not exporting it (checkpoint step2 is saved)")
    assert not (tiny / "unchanged" / "export").exists()


def test_batch_sizes_that_do_not_fit_the_ranks_end_in_one_error_line(tiny):
    config = json.loads((REPO / "ds_configs" / "cpu_bf16_zero2.json").read_text())
    (tiny / "batch32.json").write_text(json.dumps({**config, "train_batch_size": 32}))
    result = train(tiny, "batch", [f"--ds_config={tiny / 'batch32.json'}"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"mmkd train: error: {tiny / 'batch32.json'}: batch sizes do not fit 1 rank(s): train_batch_size=32, "
        "train_micro_batch_size_per_gpu=8, gradient_accumulation_steps=2; train_batch_size must equal "
        "train_micro_batch_size_per_gpu x gradient_accumulation_steps x ranks (Check batch related parameters. "
        "train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * world_size 32 != 8 * 2 * 1); "
        "drop train_batch_size to let DeepSpeed compute it")
    assert "Traceback" not in result.stderr
    assert not (tiny / "batch").exists()
