"""Token level, TLM: masked-token cross-entropy on [CLS] x [SEP] y [SEP] (mmkd-method.md, section 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100  # label of the positions that are not predicted


def tlm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy (nats) of logits (B, L, V) over the positions whose label (B, L) is not -100.

    Only the selected rows are upcast (fp32, or fp64 for fp64 logits). No selected position gives 0,
    with a zero gradient.
    """
    selected = labels != IGNORE_INDEX
    picked = logits[selected]
    ce = F.cross_entropy(picked.to(torch.promote_types(picked.dtype, torch.float32)), labels[selected],
                         reduction="sum")
    return ce / selected.sum().clamp_min(1)
