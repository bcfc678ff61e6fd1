"""TLM: mean cross-entropy over the labelled positions."""

from __future__ import annotations

import math

import pytest
import torch

from mmkd.objectives.tlm import tlm_loss


def labelled_batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 7, generator=gen, dtype=torch.float64)
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[0, 4], labels[1, 0] = 3, 6, 0
    return logits, labels


def test_value_is_mean_cross_entropy_over_labels():
    logits, labels = labelled_batch()
    picked = [(0, 1, 3), (0, 4, 6), (1, 0, 0)]
    expected = sum(math.log(sum(math.exp(x) for x in logits[b, i].tolist())) - logits[b, i, y].item()
                   for b, i, y in picked) / len(picked)
    assert tlm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-12)


def test_gradient_is_softmax_minus_one_hot_over_count():
    logits, labels = labelled_batch()
    logits.requires_grad_(True)
    tlm_loss(logits, labels).backward()
    expected = torch.zeros_like(logits)
    for b, i in [(0, 1), (0, 4), (1, 0)]:
        row = logits[b, i].detach()
        expected[b, i] = (row.exp() / row.exp().sum() - torch.eye(7, dtype=row.dtype)[labels[b, i]]) / 3
    torch.testing.assert_close(logits.grad, expected)
    assert torch.autograd.gradcheck(lambda x: tlm_loss(x, labels), (logits,), fast_mode=True)


def test_no_label_gives_zero_with_zero_gradient():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    loss = tlm_loss(logits, torch.full((2, 3), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_low_precision_logits_give_fp32_loss():
    logits, labels = labelled_batch()
    loss = tlm_loss(logits.bfloat16(), labels)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(tlm_loss(logits.bfloat16().double(), labels).item(), rel=1e-6)
