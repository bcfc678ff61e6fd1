"""Mean pooling of token states into one vector per sequence (student, head fit, evaluation share it).

The teacher's own pooling, of whatever mode, is its sentence-transformers pipeline's (mmkd.models.teacher).
"""

from __future__ import annotations

from torch import Tensor

MIN_TOKEN_COUNT = 1e-9  # floor of the token count in mean pooling: an all-padding row gives 0, not NaN


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of the non-padding token states: hidden (B, L, d), attention_mask (B, L) (1 = token,
    0 = padding) -> (B, d) in the dtype of `hidden` (sentence-transformers' mean Pooling)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    total = (hidden * mask).sum(dim=1)
    count = mask.sum(dim=1).clamp_min(MIN_TOKEN_COUNT)
    return total / count
