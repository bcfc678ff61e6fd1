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


def loops(y: np.ndarray, x: np.ndarray, t: np.ndarray, tau: float, form: str) -> float:
    """The docstring's definition, element by element in float64."""
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    y, x, t = unit(y), unit(x), unit(t)
    b = len(y)
    a_s = np.array([[y[i] @ x[j] for j in range(b)] for i in range(b)]) / tau
    a_t = np.array([[t[i] @ t[j] for j in range(b)] for i in range(b)]) / tau
    rows = np.mean([row_loss(a_s[i], a_t[i], form) for i in range(b)])
    cols = np.mean([row_loss(a_s[:, j], a_t[:, j], form) for j in range(b)])
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
