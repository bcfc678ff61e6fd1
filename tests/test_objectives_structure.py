"""StrucA: the reference against loops, the chunked path against the reference, edge cases, dispatch."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from mmkd.objectives.structure import NORM_EPS, PEARSON_EPS, prepare_rows, struca_loss

FORMS = ["kl", "pearson"]
IMPLS = ["reference", "chunked"]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def struca_loops(u: np.ndarray, v: np.ndarray, tau: float, form: str, valid: np.ndarray) -> float:
    """StrucA written out row by row in float64 numpy, from mmkd-method.md section 4."""
    n = len(u)
    valid = valid & (np.linalg.norm(u, axis=1) > NORM_EPS) & (np.linalg.norm(v, axis=1) > NORM_EPS)
    losses = []
    for i in range(n):
        cols = [j for j in range(n) if j != i and valid[j]]
        if not valid[i] or len(cols) < 2:
            continue
        a_s = np.array([cosine(u[i], u[j]) for j in cols]) / tau
        a_t = np.array([cosine(v[i], v[j]) for j in cols]) / tau
        if form == "kl":
            p_s = np.exp(a_s) / np.exp(a_s).sum()
            p_t = np.exp(a_t) / np.exp(a_t).sum()
            losses.append(float((p_t * np.log(p_t / p_s)).sum()))
        else:
            cs, ct = a_s - a_s.mean(), a_t - a_t.mean()
            r = (cs * ct).mean() / math.sqrt(((cs**2).mean() + PEARSON_EPS) * ((ct**2).mean() + PEARSON_EPS))
            losses.append(1.0 - r)
    return float(np.mean(losses)) if losses else 0.0


def loss_and_grad(student: torch.Tensor, teacher: torch.Tensor, scale: float = 1.0, **kwargs):
    """Loss value and d(scale * loss)/d(student) for a fresh leaf copy of student."""
    leaf = student.detach().clone().requires_grad_(True)
    loss = struca_loss(leaf, teacher, **kwargs)
    (scale * loss).backward()
    return loss.detach(), leaf.grad


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """Relative and absolute tolerance tol, the absolute one relative to the largest expected entry."""
    scale = max(expected.abs().max().item(), 1e-30) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("n, d_s, d_t", [(3, 4, 6), (6, 5, 3), (9, 8, 8)])
def test_value_matches_row_loops(impl, form, n, d_s, d_t):
    gen = torch.Generator().manual_seed(n)
    u = torch.randn(n, d_s, generator=gen, dtype=torch.float64)
    v = torch.randn(n, d_t, generator=gen, dtype=torch.float64)
    valid = torch.ones(n, dtype=torch.bool)
    valid[n // 2] = n < 6  # one invalid row from n = 6 on
    for tau in (0.1, 0.7):
        loss = struca_loss(u, v, tau=tau, form=form, valid=valid, impl=impl, block_size=4)
        expected = struca_loops(u.numpy(), v.numpy(), tau, form, valid.numpy())
        assert expected != 0.0
        assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("n, block", [(7, 3), (64, 16), (301, 128), (2048, 512), (2048, 700)])
def test_chunked_matches_reference(form, n, block):
    gen = torch.Generator().manual_seed(n + block)
    u = torch.randn(n, 24, generator=gen)
    v = torch.randn(n, 40, generator=gen)
    u[1] = u[0]  # a duplicate row
    valid = torch.rand(n, generator=gen) > 0.15
    ref_loss, ref_grad = loss_and_grad(u, v, 2.0, form=form, valid=valid, impl="reference")
    loss, grad = loss_and_grad(u, v, 2.0, form=form, valid=valid, impl="chunked", block_size=block)
    assert_close_scaled(loss, ref_loss)
    assert_close_scaled(grad, ref_grad)


@pytest.mark.parametrize("form", FORMS)
def test_chunked_gradcheck_fp64(form):
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(7, 4, generator=gen, dtype=torch.float64)
    valid = torch.tensor([True, True, False, True, True, True, True])

    def loss(x: torch.Tensor) -> torch.Tensor:
        return struca_loss(x, v, form=form, valid=valid, impl="chunked", block_size=3, tau=0.5)

    assert torch.autograd.gradcheck(loss, (u,), fast_mode=True)


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor (in elements) any operator returns, backward included."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.largest = max([self.largest, *sizes])
        return out


@pytest.mark.parametrize("form", FORMS)
def test_chunked_never_builds_n_by_n(form):
    n, block = 600, 50
    u = torch.randn(n, 8, requires_grad=True)
    probe = LargestTensor()
    with probe:
        struca_loss(u, torch.randn(n, 8), form=form, impl="chunked", block_size=block).backward()
    assert probe.largest <= n * block
    reference_probe = LargestTensor()  # the probe does see the reference's N x N matrices
    with reference_probe:
        struca_loss(u, torch.randn(n, 8), form=form, impl="reference").backward()
    assert reference_probe.largest == n * n


@pytest.mark.parametrize("impl", IMPLS)
def test_kl_is_non_negative(impl):
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        u, v = torch.randn(50, 6, generator=gen), torch.randn(50, 9, generator=gen)
        assert struca_loss(u, v, form="kl", impl=impl, block_size=16).item() >= 0.0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("form", FORMS)
def test_zero_for_teacher_equal_up_to_rotation_and_scale(impl, form):
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(40, 16, generator=gen)
    rotation, _ = torch.linalg.qr(torch.randn(24, 16, generator=gen))  # orthonormal columns: R^16 -> R^24
    scales = torch.rand(40, 1, generator=gen) * 5 + 0.1
    v = scales * (u @ rotation.T)
    loss, grad = loss_and_grad(u, v, form=form, impl=impl, block_size=16)
    assert abs(loss.item()) < 1e-5
    assert grad.abs().max().item() < 1e-5
    shuffled = v[torch.randperm(40, generator=gen)]  # and clearly not zero when the structure differs
    assert struca_loss(u, shuffled, form=form, impl=impl).item() > 0.05


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("form", FORMS)
def test_invalid_rows_do_not_count(impl, form):
    gen = torch.Generator().manual_seed(2)
    u, v = torch.randn(12, 6, generator=gen), torch.randn(12, 7, generator=gen)
    valid = torch.ones(12, dtype=torch.bool)
    valid[[3, 8]] = False
    loss, grad = loss_and_grad(u, v, form=form, valid=valid, impl=impl, block_size=5)
    u2, v2 = u.clone(), v.clone()
    u2[[3, 8]] = torch.randn(2, 6, generator=gen) * 10
    v2[[3, 8]] = u2[[3, 8]][:, [0, 1, 2, 3, 4, 5, 0]]
    loss2, grad2 = loss_and_grad(u2, v2, form=form, valid=valid, impl=impl, block_size=5)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6)
    torch.testing.assert_close(grad2, grad)
    assert torch.all(grad[[3, 8]] == 0)
    kept = valid.nonzero().squeeze(1)  # and the same as the loss on the valid rows alone
    assert struca_loss(u[kept], v[kept], form=form, impl=impl).item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_few_rows_are_finite(impl, form, n):
    u, v = torch.randn(n, 4), torch.randn(n, 5)
    loss, grad = loss_and_grad(u, v, form=form, impl=impl, block_size=2)
    assert loss.shape == ()
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    if n < 3:  # every row has fewer than 2 other rows: undefined, so 0
        assert loss.item() == 0.0 and torch.all(grad == 0)
    else:
        assert loss.item() != 0.0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("form", FORMS)
def test_duplicates_and_zero_vectors_stay_finite(impl, form):
    u, v = torch.randn(8, 4), torch.randn(8, 5)
    u[1], v[1] = u[0], v[0]
    u[2] = 0.0
    v[5] = 0.0
    loss, grad = loss_and_grad(u, v, form=form, impl=impl, block_size=3)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert torch.all(grad[[2, 5]] == 0)  # a row without direction takes no part
    all_same = torch.ones(5, 3)
    loss, grad = loss_and_grad(all_same, all_same, form=form, impl=impl, block_size=3)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_teacher_gets_no_gradient(impl):
    u = torch.randn(6, 4, requires_grad=True)
    v = torch.randn(6, 5, requires_grad=True)
    struca_loss(u, v, impl=impl).backward()
    assert v.grad is None and u.grad is not None


def test_low_precision_inputs_are_computed_in_fp32():
    u, v = torch.randn(20, 8).bfloat16(), torch.randn(20, 8).bfloat16()
    reference = struca_loss(u.float(), v.float(), impl="reference")
    loss = struca_loss(u, v, impl="chunked", block_size=7)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize("kwargs, allowed", [({"form": "cosine"}, "'kl', 'pearson'"),
                                             ({"impl": "cuda"}, "'reference', 'chunked', 'triton', 'auto'")])
def test_unknown_form_or_impl_names_the_allowed_values(kwargs, allowed):
    with pytest.raises(ValueError, match=allowed):
        struca_loss(torch.randn(4, 3), torch.randn(4, 3), **kwargs)


@pytest.fixture
def fake_triton_kernel(monkeypatch):
    """Stands in for mmkd.kernels.struca_triton: records its calls and returns a marker value."""
    calls = []

    class StrucAFunction:
        @staticmethod
        def apply(u_hat, v_hat, valid, tau, form, pearson_eps):
            calls.append({"u_hat": u_hat, "v_hat": v_hat, "valid": valid, "tau": tau, "form": form,
                          "pearson_eps": pearson_eps})
            return torch.tensor(-1.0)

    module = types.ModuleType("mmkd.kernels.struca_triton")
    module.StrucAFunction = StrucAFunction
    monkeypatch.setitem(sys.modules, "mmkd.kernels.struca_triton", module)
    return calls


def test_triton_impl_hands_the_kernel_prepared_rows(fake_triton_kernel):
    u, v, valid = torch.randn(5, 3), torch.randn(5, 4), torch.ones(5, dtype=torch.bool)
    assert struca_loss(u, v, tau=0.2, form="pearson", valid=valid, impl="triton").item() == -1.0
    (call,) = fake_triton_kernel
    u_hat, v_hat, prepared_valid = prepare_rows(u, v, valid)
    assert torch.equal(call["u_hat"], u_hat) and torch.equal(call["v_hat"], v_hat)
    assert torch.equal(call["valid"], prepared_valid)
    assert (call["tau"], call["form"], call["pearson_eps"]) == (0.2, "pearson", PEARSON_EPS)


def test_auto_takes_chunked_on_cpu(fake_triton_kernel):
    u, v = torch.randn(9, 3), torch.randn(9, 4)
    loss = struca_loss(u, v, impl="auto")
    assert not fake_triton_kernel
    assert loss.item() == pytest.approx(struca_loss(u, v, impl="reference").item(), rel=1e-6)
