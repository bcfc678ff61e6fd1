"""Ahead-of-time compile check of the fused StrucA kernels for sm_80 and sm_90 (no GPU needed).

Runs `python -m mmkd.kernels.compile_check` in a subprocess without TRITON_INTERPRET (the interpreter
replaces the kernels it compiles): every autotune config of every variant (arch x kernel x form x
storage dtype), as a GPU run could pick any of them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def expected_variant_count() -> int:
    """2 arches x forms x, per kernel and storage dtype, that dtype's autotune configs."""
    from mmkd.kernels import struca_triton as st
    from mmkd.kernels.compile_check import DTYPE_VARIANTS

    per_form = sum(len(st.GPU_CONFIGS[(kernel, st.dot_family(dot, precision))])
                   for kernel in ("fwd", "bwd") for _, dot, precision in DTYPE_VARIANTS.values())
    return 2 * 2 * per_form


@pytest.mark.slow
def test_kernels_compile_for_sm80_and_sm90_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, "-m", "mmkd.kernels.compile_check", "--configs", "all"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    lines = [line for line in proc.stdout.splitlines() if re.match(r"(ok  |FAIL) sm_", line)]
    assert len(lines) == expected_variant_count(), proc.stdout + proc.stderr
    assert proc.returncode == 0, "\n".join(line for line in lines if line.startswith("FAIL")) + proc.stderr[-3000:]
    for arch in ("sm_80", "sm_90"):
        assert any(line.startswith(f"ok   {arch} _struca_bwd_kernel pearson bf16") for line in lines)
