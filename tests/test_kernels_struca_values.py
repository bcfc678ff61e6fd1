"""Fused StrucA kernel (kernels/struca_triton.py) against the reference, in Triton's interpreter.

Values and gradients of `struca_loss(impl="triton")` against `struca_reference` over forms, N (1 row tile and
ragged multi-tile), d_S != d_T (including d not a multiple of BLOCK_D / BLOCK_DOUT), valid masks with
invalid and zero-norm rows, fp32 / fp16 / bf16, tau, and grad_output != 1; fp64 gradcheck; edge cases.
The interpreter tile is 64 x 64 with 32-wide feature chunks and d_S slices (INTERPRETER_CONFIGS).
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
import triton
import triton.language as tl

import mmkd.kernels.struca_triton as st
from mmkd.objectives.structure import PEARSON_EPS, prepare_rows, struca_loss, struca_reference

if not st.INTERPRET:  # tests/conftest.py sets TRITON_INTERPRET=1 on machines without a GPU
    pytest.skip("kernels are compiled for the GPU here: tests/test_kernels_struca_gpu.py runs them; "
                "TRITON_INTERPRET=1 runs these interpreter tests", allow_module_level=True)

FORMS = ("kl", "pearson")
fused = partial(struca_loss, impl="triton")  # row preparation in structure.py, then the kernel
GRAD_SCALE = 2.5  # backward of GRAD_SCALE * loss: grad_output != 1
# dtype -> (loss atol, loss rtol, grad atol relative to the largest reference gradient, grad rtol);
# grad atol has a floor of 1e-7 for rows whose gradient is pure rounding noise (a 2-column Pearson
# row has r = +-1 whatever the values: its gradient is ~0).
# fp16/bf16: the kernel stores the unit rows in the input dtype (the reference keeps them fp32), so
# the tolerances are those of rounding cosines to 11 / 8 significant bits, times 1/tau = 10.
# Measured here (N = 100): fp16 loss 5e-5, grads 7e-4 of the largest; bf16 7e-4 and 5e-3.
TOLERANCES = {
    torch.float32: (1e-5, 1e-5, 1e-5, 1e-4),
    torch.float16: (2e-4, 2e-4, 3e-3, 1e-2),
    torch.bfloat16: (3e-3, 3e-3, 2e-2, 5e-2),
}


def _inputs(n: int, d_s: int, d_t: int, dtype: torch.dtype, seed: int, masked: bool):
    """Correlated student/teacher rows (so KL is not trivially large); with `masked`, about 1/6 of the
    rows invalid and one zero-norm student row and one zero-norm teacher row."""
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(n, d_t, generator=gen)
    mix = torch.randn(d_t, d_s, generator=gen) / d_t ** 0.5
    student = teacher @ mix + 0.5 * torch.randn(n, d_s, generator=gen)
    valid = None
    if masked:
        valid = torch.rand(n, generator=gen) > 1 / 6
        if n >= 7:
            student[3] = 0.0
            teacher[5] = 0.0
    return student.to(dtype), teacher.to(dtype), valid


def _loss_and_grad(fn, student, teacher, grad_scale=GRAD_SCALE, **kwargs):
    student = student.detach().clone().requires_grad_(True)
    loss = fn(student, teacher, **kwargs)
    (grad_scale * loss).backward()
    return loss.detach(), student.grad


def _assert_matches(student, teacher, dtype=torch.float32, grad_scale=GRAD_SCALE, **kwargs):
    loss, grad = _loss_and_grad(fused, student, teacher, grad_scale, **kwargs)
    ref_loss, ref_grad = _loss_and_grad(struca_reference, student, teacher, grad_scale, **kwargs)
    loss_atol, loss_rtol, grad_atol, grad_rtol = TOLERANCES[dtype]
    assert loss.dtype == ref_loss.dtype and loss.shape == ()
    assert grad.dtype == student.dtype and grad.shape == student.shape
    torch.testing.assert_close(loss, ref_loss, atol=loss_atol, rtol=loss_rtol)
    scale = ref_grad.float().abs().max().item()
    torch.testing.assert_close(grad.float(), ref_grad.float(), atol=max(grad_atol * scale, 1e-7), rtol=grad_rtol)
    return loss


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("n", [1, 2, 7, 64, 300])
def test_matches_reference_over_n(form, n):
    student, teacher, valid = _inputs(n, 48, 40, torch.float32, seed=n, masked=True)
    _assert_matches(student, teacher, form=form, valid=valid)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("d_s,d_t", [(33, 40), (40, 33), (17, 96)])
def test_matches_reference_over_dims(form, d_s, d_t):
    student, teacher, valid = _inputs(97, d_s, d_t, torch.float32, seed=d_s, masked=True)
    loss = _assert_matches(student, teacher, form=form, valid=valid)
    assert loss > 0


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_matches_reference_half_precision(form, dtype):
    student, teacher, valid = _inputs(100, 48, 33, dtype, seed=7, masked=True)
    _assert_matches(student, teacher, dtype, form=form, valid=valid)


@pytest.mark.parametrize("form", FORMS)
def test_fp16_small_grad_output_does_not_underflow(form):
    # G_ij ~ grad_output / (N N_r) ~ 1e-7 here: subnormal in fp16 (spacing 6e-8) unless G is normalised
    # before its cast (backward_coefficients' scale).
    student, teacher, valid = _inputs(100, 48, 33, torch.float16, seed=8, masked=True)
    _assert_matches(student, teacher, torch.float16, grad_scale=1e-3, form=form, valid=valid)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("tau", [0.02, 0.5])
def test_matches_reference_over_tau(form, tau):
    # tau = 0.02 puts logits at +-50: exp() of a masked diagonal entry would overflow if not masked.
    student, teacher, valid = _inputs(70, 40, 48, torch.float32, seed=3, masked=True)
    _assert_matches(student, teacher, form=form, tau=tau, valid=valid)


def test_pearson_near_constant_rows():
    # Student rows nearly parallel: A^S_ij ~ 9.99, row variance ~2e-6 ~ PEARSON_EPS. Raw
    # sums (E[a^2] - E[a]^2 in fp32) cancel to noise here; the fp64 reference is the truth.
    gen = torch.Generator().manual_seed(11)
    base = torch.randn(1, 48, generator=gen)
    student = base + 0.03 * torch.randn(90, 48, generator=gen)
    teacher = torch.randn(90, 40, generator=gen)
    loss, grad = _loss_and_grad(fused, student, teacher, form="pearson")
    ref_loss, ref_grad = _loss_and_grad(struca_reference, student.double(), teacher.double(), form="pearson")
    torch.testing.assert_close(loss.double(), ref_loss, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grad.double(), ref_grad, atol=1e-3 * ref_grad.abs().max().item(), rtol=1e-3)


@pytest.mark.parametrize("form", FORMS)
def test_gradcheck_fp64(form):
    student, teacher, _ = _inputs(11, 20, 17, torch.float64, seed=5, masked=False)
    valid = torch.ones(11, dtype=torch.bool)
    valid[4] = False
    student.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: fused(s, teacher, form=form, valid=valid), (student,),
                                    fast_mode=True)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("n,n_valid", [(0, 0), (1, 1), (2, 2), (5, 2), (40, 0)])
def test_no_participating_row_gives_zero(form, n, n_valid):
    # A row takes part only with >= 2 valid columns other than itself: fewer than 3 valid rows -> 0.
    student, teacher, _ = _inputs(n, 24, 16, torch.float32, seed=1, masked=False)
    valid = torch.arange(n) < n_valid
    loss, grad = _loss_and_grad(fused, student, teacher, form=form, valid=valid)
    assert loss.item() == 0.0
    assert grad.shape == (n, 24) and torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("form", FORMS)
def test_three_valid_rows_take_part(form):
    student, teacher, _ = _inputs(6, 24, 16, torch.float32, seed=2, masked=False)
    valid = torch.tensor([True, False, True, False, True, False])
    loss = _assert_matches(student, teacher, form=form, valid=valid)
    assert loss > 0


def test_struca_loss_impl_triton_is_this_kernel():
    student, teacher, valid = _inputs(40, 24, 16, torch.float32, seed=9, masked=True)
    loss, grad = _loss_and_grad(struca_loss, student, teacher, form="pearson", valid=valid, impl="triton")
    direct_loss, direct_grad = _loss_and_grad(fused, student, teacher, form="pearson", valid=valid)
    assert torch.equal(loss, direct_loss) and torch.equal(grad, direct_grad)


def test_launchers_accept_unaligned_and_strided_rows():
    # The launchers copy such rows into 16-aligned, 16-padded buffers (the only layout compiled).
    student, teacher, valid = _inputs(50, 48, 40, torch.float32, seed=6, masked=True)
    u_hat, v_hat, valid = prepare_rows(student, teacher, valid)
    u_odd = torch.empty(50 * 48 + 1)[1:].view(50, 48)  # data_ptr % 16 == 4
    u_odd.copy_(u_hat)
    v_wide = torch.zeros(50, 50)[:, 3:43]  # non-contiguous
    v_wide.copy_(v_hat)
    for form in FORMS:
        loss, stats = st.struca_forward(u_odd, v_wide, valid, 0.1, form, PEARSON_EPS)
        ref_loss, ref_stats = st.struca_forward(u_hat, v_hat, valid, 0.1, form, PEARSON_EPS)
        assert torch.equal(loss, ref_loss) and torch.equal(stats, ref_stats)
        coef, scale = st.backward_coefficients(stats, valid, torch.tensor(1.0), form, PEARSON_EPS)
        du = st.struca_backward(u_odd, v_wide, valid, coef, scale, 0.1, form)
        assert du.shape == (50, 48)
        assert torch.equal(du, st.struca_backward(u_hat, v_hat, valid, coef, scale, 0.1, form))


def test_teacher_gets_no_gradient():
    student, teacher, _ = _inputs(20, 24, 16, torch.float32, seed=4, masked=False)
    teacher.requires_grad_(True)
    student.requires_grad_(True)
    fused(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None


def test_rejects_unknown_form_and_cpu_without_interpreter(monkeypatch):
    student, teacher, _ = _inputs(8, 24, 16, torch.float32, seed=4, masked=False)
    with pytest.raises(ValueError, match="form"):
        fused(student, teacher, form="cosine")
    monkeypatch.setattr(st, "INTERPRET", False)
    with pytest.raises(RuntimeError, match="CUDA"):
        fused(student, teacher)


@triton.jit
def _round_kernel(x_ptr, y_ptr, n, STORAGE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(y_ptr + offs, st._round_like_gpu(x, STORAGE, tl.float32), mask=offs < n)


@pytest.mark.parametrize("storage,dtype", [(tl.bfloat16, torch.bfloat16), (tl.float16, torch.float16)])
def test_interpreter_rounds_g_like_the_gpu(storage, dtype):
    # The backward's G tile is rounded to the storage dtype before its dot, as on a GPU.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=gen) * torch.logspace(-6, 3, 1000)
    y = torch.empty_like(x)
    _round_kernel[(1,)](x, y, 1000, STORAGE=storage, BLOCK=1024)
    assert torch.equal(y, x.to(dtype).float())
