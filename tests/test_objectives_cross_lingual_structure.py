"""Cross-lingual sentence StrucA (struct_sent_mode=cross_lingual): loops, gradients, edge cases, wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmkd.objectives.combined import LossWeights, MMKDLoss
from mmkd.objectives.structure import PEARSON_EPS, cross_lingual_struca_loss


def row_loss(a_s: np.ndarray, a_t: np.ndarray, form: str) -> float:
    if form == "kl":
        p_s, p_t = np.exp(a_s) / np.exp(a_s).sum(), np.exp(a_t) / np.exp(a_t).sum()
        return float((p_t * np.log(p_t / p_s)).sum())
    cs, ct = a_s - a_s.mean(), a_t - a_t.mean()
    return 1.0 - (cs * ct).mean() / math.sqrt(((cs**2).mean() + PEARSON_EPS) * ((ct**2).mean() + PEARSON_EPS))


def loops(y: np.ndarray, x: np.ndarray, t: np.ndarray, tau: float, form: str, bank: np.ndarray | None = None) -> float:
    """The docstring's definition, element by element in float64: rows over x_j then bank_k, columns over y_i."""
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    y, x, t = unit(y), unit(x), unit(t)
    b = len(y)
    bank = np.zeros((0, t.shape[1])) if bank is None else unit(bank)
    rows = np.mean([row_loss(np.array([y[i] @ x[j] for j in range(b)] + [y[i] @ k for k in bank]) / tau,
                             np.array([t[i] @ t[j] for j in range(b)] + [t[i] @ k for k in bank]) / tau, form)
                    for i in range(b)])
    cols = np.mean([row_loss(np.array([y[i] @ x[j] for i in range(b)]) / tau,
                             np.array([t[i] @ t[j] for i in range(b)]) / tau, form) for j in range(b)])
    return float((rows + cols) / 2)


def inputs(b: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, d, generator=g, dtype=torch.float64) for _ in range(3))


@pytest.mark.parametrize("form", ["kl", "pearson"])
@pytest.mark.parametrize("b", [2, 5, 16])
def test_value_matches_loops(form, b):
    y, x, t = inputs(b, 7)
    value = cross_lingual_struca_loss(y, x, t, tau=0.1, form=form)
    assert float(value) == pytest.approx(loops(y.numpy(), x.numpy(), t.numpy(), 0.1, form), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("form", ["kl", "pearson"])
@pytest.mark.parametrize("b,k", [(2, 1), (5, 9), (16, 64)])
def test_value_with_a_bank_matches_loops(form, b, k):
    y, x, t = inputs(b, 7)
    bank = torch.randn(k, 7, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    value = cross_lingual_struca_loss(y, x, t, tau=0.1, form=form, bank=bank)
    want = loops(y.numpy(), x.numpy(), t.numpy(), 0.1, form, bank.numpy())
    assert float(value) == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert float(value) != pytest.approx(loops(y.numpy(), x.numpy(), t.numpy(), 0.1, form), rel=1e-6)


@pytest.mark.parametrize("form", ["kl", "pearson"])
def test_gradcheck_with_a_bank_and_the_bank_gets_no_gradient(form):
    y, x, t = inputs(4, 5, seed=1)
    bank = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    y.requires_grad_(True)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, c: cross_lingual_struca_loss(a, c, t, tau=0.5, form=form, bank=bank),
                                     (y, x))
    cross_lingual_struca_loss(y, x, t, bank=bank).backward()
    assert bank.grad is None
    with pytest.raises(ValueError, match=r"bank must be \(K, 5\)"):
        cross_lingual_struca_loss(y, x, t, bank=bank[:, :3])


def test_mmkd_loss_holds_the_bank_as_a_buffer_out_of_the_state_dict():
    bank = torch.randn(3, 4)
    loss = MMKDLoss(struct_sent_mode="cross_lingual", struct_bank=bank)
    assert loss.struct_bank is bank and "struct_bank" not in loss.state_dict()
    assert loss.to(torch.float64).struct_bank.dtype == torch.float64
    with pytest.raises(ValueError, match="struct_bank applies to cross_lingual"):
        MMKDLoss(struct_bank=bank)


@pytest.mark.parametrize("form", ["kl", "pearson"])
def test_gradcheck_fp64(form):
    y, x, t = inputs(6, 5, seed=1)
    y.requires_grad_(True)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, c: cross_lingual_struca_loss(a, c, t, tau=0.5, form=form), (y, x))


def test_zero_when_the_student_is_the_teacher_on_both_sides_and_a_descent_step_pulls_translations_in():
    _, _, t = inputs(8, 6, seed=2)
    assert float(cross_lingual_struca_loss(t, t * 3.0, t, tau=0.1)) == pytest.approx(0.0, abs=1e-12)
    y, x, _ = inputs(8, 6, seed=3)
    y.requires_grad_(True)
    before = cross_lingual_struca_loss(y, x, t, tau=0.1)
    before.backward()
    moved = (y - 0.05 * y.grad).detach()
    assert float(cross_lingual_struca_loss(moved, x, t, tau=0.1)) < before.item()


def test_one_row_is_zero_with_a_gradient_and_the_teacher_gets_none():
    y, x, t = inputs(1, 4)
    y.requires_grad_(True)
    t.requires_grad_(True)
    loss = cross_lingual_struca_loss(y, x, t)
    loss.backward()
    assert float(loss) == 0.0 and torch.equal(y.grad, torch.zeros_like(y)) and t.grad is None
    with pytest.raises(ValueError, match="three"):
        cross_lingual_struca_loss(y, x[:, :2], t)


def test_bf16_inputs_are_computed_in_fp32():
    y, x, t = (v.to(torch.bfloat16) for v in inputs(4, 8))
    assert cross_lingual_struca_loss(y, x, t).dtype == torch.float32


def test_mmkd_loss_refuses_an_unknown_mode_and_gathering():
    with pytest.raises(ValueError, match="struct_sent_mode must be one of"):
        MMKDLoss(struct_sent_mode="both")
    with pytest.raises(ValueError, match="gather_sentence_rows false"):
        MMKDLoss(struct_sent_mode="cross_lingual", gather_sentence_rows=True)
    assert LossWeights(tlm=0, xwcl=0, senta=0, struca_tok=0).struca_sent == 1.0
