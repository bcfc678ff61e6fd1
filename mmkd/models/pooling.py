"""Pooling token states into one vector per sequence (teacher, student and evaluation share it).

Each function takes hidden (B, L, d) and attention_mask (B, L) (1 = token, 0 = padding) and returns
(B, d) in the dtype of `hidden`. They follow sentence-transformers' Pooling module, so a teacher
pooled here gives the embedding its sentence-transformers pipeline gives.
"""

from __future__ import annotations

import torch
from torch import Tensor

POOLING_MODES = ("mean", "cls", "max")
MIN_TOKEN_COUNT = 1e-9  # floor of the token count in mean pooling: an all-padding row gives 0, not NaN


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of the non-padding token states, (B, L, d) -> (B, d)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    total = (hidden * mask).sum(dim=1)
    count = mask.sum(dim=1).clamp_min(MIN_TOKEN_COUNT)
    return total / count


def cls_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """State of the first non-padding token (position 0 under right padding), (B, L, d) -> (B, d)."""
    first = attention_mask.to(torch.int).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]


def max_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Element-wise maximum over the non-padding token states, (B, L, d) -> (B, d)."""
    padding = attention_mask.unsqueeze(-1) == 0
    return hidden.masked_fill(padding, float("-inf")).max(dim=1).values


POOLERS = {"mean": mean_pool, "cls": cls_pool, "max": max_pool}


def pool(hidden: Tensor, attention_mask: Tensor, mode: str) -> Tensor:
    """Pool (B, L, d) -> (B, d) with `mode`, one of POOLING_MODES."""
    if mode not in POOLERS:
        raise ValueError(f"pooling mode {mode!r} is not one of {POOLING_MODES}")
    return POOLERS[mode](hidden, attention_mask)
