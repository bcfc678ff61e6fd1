"""The fused StrucA kernel compiled for the GPU against the reference (skipped without CUDA).

The interpreter tests (test_kernels_struca_values.py) cover the grid of edge cases on CPU; this
module checks what only a GPU shows: the compiled kernels' values and gradients, over sizes with
many ragged tiles and with the autotuned configs, in fp32 (exact "ieee" dots), fp16 and bf16, and
`struca_loss(impl="auto")` picking the kernel on CUDA tensors.
"""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

import mmkd.kernels.struca_triton as st  # noqa: E402
from mmkd.objectives.structure import struca_loss, struca_reference  # noqa: E402

if st.INTERPRET:
    pytest.skip("TRITON_INTERPRET=1: kernels are interpreted, not compiled", allow_module_level=True)

# dtype -> (loss rtol, grad atol relative to the largest reference gradient)
TOLERANCES = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-3, 5e-3), torch.bfloat16: (5e-3, 3e-2)}


def _rows(n: int, d_s: int, d_t: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    teacher = torch.randn(n, d_t, device="cuda", generator=gen)
    student = teacher @ (torch.randn(d_t, d_s, device="cuda", generator=gen) / d_t ** 0.5)
    student = student + 0.5 * torch.randn(n, d_s, device="cuda", generator=gen)
    valid = torch.rand(n, device="cuda", generator=gen) > 0.1
    return student.to(dtype), teacher.to(dtype), valid


@pytest.fixture
def no_tf32():
    """The reference's fp32 matmuls without TF32 during the test; the global flag is restored after it
    (by hand: monkeypatch's undo deletes the attribute, which torch.backends.cuda.matmul does not have)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


def _loss_and_grad(fn, student, teacher, **kwargs):
    student = student.detach().clone().requires_grad_(True)
    loss = fn(student, teacher, **kwargs)
    (2.5 * loss).backward()
    return loss.detach().float(), student.grad.float()


@pytest.mark.parametrize("form", ["kl", "pearson"])
@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("n, d_s, d_t", [(1, 384, 384), (300, 384, 384), (1000, 768, 384), (4097, 384, 312)])
@pytest.mark.usefixtures("no_tf32")
def test_compiled_kernel_matches_reference(form, dtype, n, d_s, d_t):
    student, teacher, valid = _rows(n, d_s, d_t, dtype)
    loss, grad = _loss_and_grad(struca_loss, student, teacher, form=form, valid=valid, impl="triton")
    ref_loss, ref_grad = _loss_and_grad(struca_reference, student.float(), teacher.float(), form=form, valid=valid)
    loss_rtol, grad_atol = TOLERANCES[dtype]
    torch.testing.assert_close(loss, ref_loss, rtol=loss_rtol, atol=1e-6)
    scale = ref_grad.abs().max().clamp_min(1e-12)
    torch.testing.assert_close(grad / scale, ref_grad / scale, rtol=0, atol=grad_atol)


def test_auto_picks_the_kernel_on_cuda(monkeypatch):
    student, teacher, _ = _rows(64, 48, 40, torch.float32)
    calls = []
    real = st.StrucAFunction.apply
    monkeypatch.setattr(st.StrucAFunction, "apply", lambda *a: calls.append(1) or real(*a))
    struca_loss(student, teacher, impl="auto")
    assert calls == [1]
