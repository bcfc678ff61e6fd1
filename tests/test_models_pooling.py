"""Mean pooling against values computed by hand."""

from __future__ import annotations

import torch

from mmkd.models.pooling import mean_pool

# Two sequences of length 3, d = 2; the second has one padding position holding large values that
# must not leak into any pooled vector.
HIDDEN = torch.tensor([[[1.0, -2.0], [3.0, 4.0], [5.0, 0.0]],
                       [[-1.0, 2.0], [7.0, -6.0], [100.0, 100.0]]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_mean_pool_averages_non_padding_tokens():
    expected = torch.tensor([[(1 + 3 + 5) / 3, (-2 + 4 + 0) / 3], [(-1 + 7) / 2, (2 - 6) / 2]])
    torch.testing.assert_close(mean_pool(HIDDEN, MASK), expected)


def test_mean_pool_of_all_padding_row_is_zero_not_nan():
    pooled = mean_pool(HIDDEN, torch.tensor([[0, 0, 0], [1, 0, 0]]))
    torch.testing.assert_close(pooled, torch.tensor([[0.0, 0.0], [-1.0, 2.0]]))


def test_mean_pool_gradient_reaches_only_real_tokens():
    hidden = HIDDEN.clone().requires_grad_(True)
    mean_pool(hidden, MASK).sum().backward()
    expected = torch.tensor([[[1 / 3] * 2] * 3, [[0.5] * 2, [0.5] * 2, [0.0] * 2]])
    torch.testing.assert_close(hidden.grad, expected)
