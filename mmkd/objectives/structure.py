"""Structure level, StrucA: correlation-similarity distillation (mmkd-method.md, section 4).

For N matched rows with student vectors U (N, d_S) and teacher vectors V (N, d_T):
    A^S_ij = cos(U_i, U_j) / tau,   A^T_ij = cos(V_i, V_j) / tau,   over columns j != i, j valid
    form "kl":      L = mean_i KL(softmax_j A^T_i || softmax_j A^S_i)
    form "pearson": L = mean_i (1 - pearson_j(A^S_ij, A^T_ij))
The mean runs over the rows that take part: valid rows with at least 2 valid columns. A row whose
student or teacher vector has (near) zero norm has no direction and does not take part either.
N < 2, or no row taking part, gives 0 (with a gradient of zeros, never NaN). The teacher gets no
gradient. Computation is in fp32 (fp64 inputs stay fp64, for gradcheck); the result is a 0-dim tensor.

`impl` picks how: "reference" materialises the N x N matrices (the definition, for tests);
"chunked" walks row blocks with recomputation in backward (O(N x block) memory); "triton" is the
fused kernel of kernels/struca_triton.py; "auto" takes triton on CUDA tensors, chunked elsewhere.
"""

from __future__ import annotations

import torch
from torch import Tensor

FORMS = ("kl", "pearson")
IMPLS = ("reference", "chunked", "triton", "auto")
NORM_EPS = 1e-6  # rows with |u| or |v| at or below this take no part (no direction to compare)
PEARSON_EPS = 1e-6  # added to each row variance (units of A^2) so constant rows give r = 0, not NaN
MASKED_LOGIT = -1e9  # finite stand-in for -inf: masked columns get probability 0 and no NaN


def prepare_rows(student: Tensor, teacher: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Normalise rows and fold zero-norm rows into the valid mask.

    Returns (u_hat (N, d_S), v_hat (N, d_T), valid (N,) bool), in fp32 (fp64 kept). The teacher is
    detached; u_hat carries the gradient of the normalisation back to `student`.
    """
    if student.dim() != 2 or teacher.dim() != 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"struca_loss: student and teacher must be (N, d_S) and (N, d_T), got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    n = student.shape[0]
    if valid is None:
        valid = torch.ones(n, dtype=torch.bool, device=student.device)
    elif valid.shape != (n,):
        raise ValueError(f"struca_loss: valid must have shape ({n},), got {tuple(valid.shape)}")
    dtype = torch.promote_types(student.dtype, torch.float32)
    u = student.to(dtype)
    v = teacher.detach().to(dtype)
    u_norm = u.norm(dim=1)
    v_norm = v.norm(dim=1)
    valid = valid.to(torch.bool) & (u_norm > NORM_EPS) & (v_norm > NORM_EPS)
    u_hat = u / u_norm.clamp_min(NORM_EPS)[:, None]
    v_hat = v / v_norm.clamp_min(NORM_EPS)[:, None]
    return u_hat, v_hat, valid


def row_losses_reference(a_s: Tensor, a_t: Tensor, columns: Tensor, form: str) -> Tensor:
    """Per-row StrucA loss for logit blocks a_s, a_t (R, C) with column mask `columns` (R, C) bool."""
    if form == "kl":
        log_p_s = torch.log_softmax(a_s.masked_fill(~columns, MASKED_LOGIT), dim=1)
        log_p_t = torch.log_softmax(a_t.masked_fill(~columns, MASKED_LOGIT), dim=1)
        terms = log_p_t.exp() * (log_p_t - log_p_s)
        return torch.where(columns, terms, torch.zeros_like(terms)).sum(dim=1)
    weight = columns.to(a_s.dtype)
    count = weight.sum(dim=1).clamp_min(1.0)
    centred_s = (a_s - (a_s * weight).sum(dim=1, keepdim=True) / count[:, None]) * weight
    centred_t = (a_t - (a_t * weight).sum(dim=1, keepdim=True) / count[:, None]) * weight
    cov = (centred_s * centred_t).sum(dim=1) / count
    var_s = (centred_s * centred_s).sum(dim=1) / count
    var_t = (centred_t * centred_t).sum(dim=1) / count
    return 1.0 - cov / torch.sqrt((var_s + PEARSON_EPS) * (var_t + PEARSON_EPS))


def struca_reference(student: Tensor, teacher: Tensor, *, tau: float = 0.1, form: str = "kl",
                     valid: Tensor | None = None) -> Tensor:
    """The definition: materialises the N x N similarity matrices. Memory O(N^2)."""
    u_hat, v_hat, valid = prepare_rows(student, teacher, valid)
    n = u_hat.shape[0]
    columns = valid[None, :] & ~torch.eye(n, dtype=torch.bool, device=u_hat.device)
    rows = valid & (columns.sum(dim=1) >= 2)
    per_row = row_losses_reference(u_hat @ u_hat.T / tau, v_hat @ v_hat.T / tau, columns, form)
    per_row = torch.where(rows, per_row, torch.zeros_like(per_row))
    return per_row.sum() / rows.sum().clamp_min(1)
