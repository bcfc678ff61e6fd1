"""Under bf16 ZeRO-1/2 the fp32 master weights, and so the export's fp32 weights read from a checkpoint
with zero_to_fp32, start from the fp32 student, not from its bf16 rounding (mmkd/master_weights.py).
One process, in this one: a DeepSpeed engine on the tiny student of tests/tiny_setup.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tiny_setup import build_tiny

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, teacher_dir) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"), teacher_dir) / "student"


@pytest.mark.parametrize("stage", [1, 2])
def test_exported_master_weights_start_from_the_fp32_student(student_dir, tmp_path, stage):
    from mmkd import master_weights
    from mmkd.checkpointing import checkpoint_root, fp32_student_state
    from mmkd.engine import build_engine, build_student, init_distributed
    from mmkd.models.student import load_student
    from mmkd.objectives.combined import LossWeights, MMKDLoss

    init_distributed()
    ds_config = json.loads((REPO / "ds_configs" / "cpu_bf16_zero2.json").read_text())
    ds_config["zero_optimization"]["stage"] = stage
    ds_config["scheduler"]["params"]["total_num_steps"] = 10
    del ds_config["tensorboard"]
    engine = build_engine(build_student(str(student_dir), 32, ds_config), MMKDLoss(LossWeights()), ds_config)
    assert master_weights.load_fp32_student(engine, str(student_dir), 32) == len(list(engine.module.parameters()))
    engine.save_checkpoint(str(checkpoint_root(tmp_path)), tag="step0")
    exported = fp32_student_state(engine, "step0", tmp_path)
    student = load_student(student_dir, teacher_hidden_size=32)
    fp32 = {name: value.detach() for name, value in student.named_parameters()}
    for name, value in fp32.items():
        assert torch.equal(exported[name], value), name
    rounded = [name for name, value in fp32.items() if not torch.equal(value.bfloat16().float(), value)]
    assert "heads.sentence.weight" in rounded and "mlm.bert.embeddings.word_embeddings.weight" in rounded
