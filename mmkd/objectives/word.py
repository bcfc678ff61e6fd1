"""Word level, XWCL: cross-lingual word-level InfoNCE over masked tokens (mmkd-method.md, section 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmkd.objectives.gather import gather_rows

COS_EPS = 1e-8  # norm floor in the cosine: a zero vector has cosine 0 with everything


def xwcl_loss(queries: Tensor, candidates: Tensor, positives: Tensor, tau_w: float = 0.05) -> Tensor:
    """Mean over K of -log softmax_j(cos(q_k, c_j) / tau_w)[positives_k].

    queries (K, d_T) = P_w h^S at the selected positions; candidates (C, d_T) = teacher token states;
    positives (K,) long index candidates. Computed in fp32 (fp64 kept). K = 0 gives 0 (zero gradient).
    """
    if queries.dim() != 2 or candidates.dim() != 2 or positives.shape != queries.shape[:1]:
        raise ValueError(
            f"xwcl_loss: expected queries (K, d), candidates (C, d), positives (K,), got "
            f"{tuple(queries.shape)}, {tuple(candidates.shape)}, {tuple(positives.shape)}"
        )
    if tau_w <= 0:
        raise ValueError(f"xwcl_loss: tau_w must be > 0, got {tau_w}")
    dtype = torch.promote_types(queries.dtype, torch.float32)
    q_hat = F.normalize(queries.to(dtype), dim=1, eps=COS_EPS)
    c_hat = F.normalize(candidates.to(dtype), dim=1, eps=COS_EPS)
    logits = q_hat @ c_hat.T / tau_w
    return F.cross_entropy(logits, positives, reduction="sum") / max(queries.shape[0], 1)


def gather_candidates(candidates: Tensor) -> tuple[Tensor, int]:
    """XWCL negatives from every data-parallel rank: (candidates of all ranks (C_all, d_T), offset).

    This rank's positives index the result after adding `offset`; no gradient reaches other ranks'
    candidates. A no-op, (candidates, 0), without an initialised process group.
    """
    return gather_rows(candidates)
