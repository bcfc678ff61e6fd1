"""Sentence level, SentA: student sentence embeddings regress onto the teacher's (mmkd-method.md, sec. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def senta_loss(student_x: Tensor, student_y: Tensor, teacher: Tensor) -> Tensor:
    """MSE(P_s e^S(y), e^T(x)) + MSE(P_s e^S(x), e^T(x)), each averaged over batch and d_E.

    student_x, student_y: projected student embeddings of x and y (B, d_E); teacher: e^T(x) (B, d_E), the
    teacher's sentence embedding (d_E: its size, the token states' d_T unless a Dense module changes it).
    Computed in fp32 (fp64 kept).
    """
    if not student_x.shape == student_y.shape == teacher.shape or teacher.dim() != 2:
        raise ValueError(
            f"senta_loss: expected three (B, d_E) tensors, got {tuple(student_x.shape)}, "
            f"{tuple(student_y.shape)}, {tuple(teacher.shape)}"
        )
    dtype = torch.promote_types(student_x.dtype, torch.float32)
    target = teacher.to(dtype)
    return F.mse_loss(student_y.to(dtype), target) + F.mse_loss(student_x.to(dtype), target)
