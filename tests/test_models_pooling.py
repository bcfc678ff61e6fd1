"""Pooling modes against values computed by hand."""

from __future__ import annotations

import pytest
import torch

from mmkd.models.pooling import cls_pool, max_pool, mean_pool, pool

# Two sequences of length 3, d = 2; the second has one padding position holding large values that
# must not leak into any pooled vector.
HIDDEN = torch.tensor([[[1.0, -2.0], [3.0, 4.0], [5.0, 0.0]],
                       [[-1.0, 2.0], [7.0, -6.0], [100.0, 100.0]]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_mean_pool_averages_non_padding_tokens():
    expected = torch.tensor([[(1 + 3 + 5) / 3, (-2 + 4 + 0) / 3], [(-1 + 7) / 2, (2 - 6) / 2]])
    torch.testing.assert_close(mean_pool(HIDDEN, MASK), expected)
    torch.testing.assert_close(pool(HIDDEN, MASK, "mean"), expected)


def test_cls_pool_takes_first_token():
    expected = torch.tensor([[1.0, -2.0], [-1.0, 2.0]])
    torch.testing.assert_close(cls_pool(HIDDEN, MASK), expected)
    torch.testing.assert_close(pool(HIDDEN, MASK, "cls"), expected)


def test_cls_pool_under_left_padding_takes_first_real_token():
    left_padded = torch.tensor([[0, 1, 1]])
    torch.testing.assert_close(cls_pool(HIDDEN[:1], left_padded), torch.tensor([[3.0, 4.0]]))


def test_max_pool_ignores_padding():
    expected = torch.tensor([[5.0, 4.0], [7.0, 2.0]])
    torch.testing.assert_close(max_pool(HIDDEN, MASK), expected)
    torch.testing.assert_close(pool(HIDDEN, MASK, "max"), expected)


def test_mean_pool_of_all_padding_row_is_zero_not_nan():
    pooled = mean_pool(HIDDEN, torch.tensor([[0, 0, 0], [1, 0, 0]]))
    torch.testing.assert_close(pooled, torch.tensor([[0.0, 0.0], [-1.0, 2.0]]))


def test_mean_pool_gradient_reaches_only_real_tokens():
    hidden = HIDDEN.clone().requires_grad_(True)
    mean_pool(hidden, MASK).sum().backward()
    expected = torch.tensor([[[1 / 3] * 2] * 3, [[0.5] * 2, [0.5] * 2, [0.0] * 2]])
    torch.testing.assert_close(hidden.grad, expected)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="weightedmean"):
        pool(HIDDEN, MASK, "weightedmean")
