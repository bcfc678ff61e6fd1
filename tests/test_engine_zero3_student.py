"""Under ZeRO-3 the student is built inside zero.Init (transformers' HfDeepSpeedConfig): its parameters
are partitioned in the JSON's dtype from the start and hold the saved weights; models loaded after are whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_setup import subprocess_env

pytest.importorskip("accelerate", reason="HfDeepSpeedConfig needs accelerate (requirements.txt)")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHECK = """
import json, sys
import deepspeed, torch
from transformers import AutoModelForMaskedLM
from mmkd.engine import build_student, init_distributed
from mmkd.models.student import load_student

student_dir = sys.argv[1]
init_distributed()
config = json.loads(open("ds_configs/cpu_bf16_zero2.json").read())
config["zero_optimization"] = {"stage": 3}
student = build_student(student_dir, 32, config)
saved = load_student(student_dir, teacher_hidden_size=32)
params = dict(student.named_parameters())
assert all(hasattr(p, "ds_id") for p in params.values()), "not partitioned"
assert all(p.ds_tensor.dtype == torch.bfloat16 for p in params.values()), \\
    sorted({str(p.ds_tensor.dtype) for p in params.values()})
assert all(p.numel() == 0 for p in params.values()), "a full parameter is held"
with deepspeed.zero.GatheredParameters(list(params.values())):
    for name, value in saved.named_parameters():
        torch.testing.assert_close(params[name].data, value.data.to(torch.bfloat16), msg=name)
later = AutoModelForMaskedLM.from_pretrained(student_dir)
assert not any(hasattr(p, "ds_id") for p in later.parameters()), "a model loaded afterwards was partitioned"
print("OK")
"""


def test_zero3_student_is_partitioned_in_its_dtype_as_it_is_built(tmp_path, teacher_dir):
    from tiny_setup import build_tiny

    tiny = build_tiny(tmp_path / "tiny", teacher_dir)
    result = subprocess.run([sys.executable, "-c", CHECK, str(tiny / "student")], cwd=REPO,
                            env={**subprocess_env(),
                                 "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout[-3000:] + result.stderr[-5000:]
