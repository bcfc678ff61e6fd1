"""SentA: two mean squared errors against the teacher's sentence embedding."""

from __future__ import annotations

import pytest
import torch

from mmkd.objectives.sentence import senta_loss


def test_value_and_gradient_match_the_formula():
    gen = torch.Generator().manual_seed(0)
    s_x, s_y, t = (torch.randn(3, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    expected = sum(((s_y[b, k] - t[b, k]) ** 2 + (s_x[b, k] - t[b, k]) ** 2).item()
                   for b in range(3) for k in range(4)) / 12
    s_x.requires_grad_(True)
    s_y.requires_grad_(True)
    loss = senta_loss(s_x, s_y, t)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    torch.testing.assert_close(s_x.grad, 2 * (s_x - t).detach() / 12)
    torch.testing.assert_close(s_y.grad, 2 * (s_y - t).detach() / 12)


def test_zero_when_both_sides_equal_the_teacher():
    t = torch.randn(2, 5)
    assert senta_loss(t.clone(), t.clone(), t).item() == 0.0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"\(B, d_E\)"):
        senta_loss(torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 5))
