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
fused kernel of kernels/struca_triton.py (installed as mmkd.kernels); "auto" takes triton on CUDA
tensors, chunked elsewhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

FORMS = ("kl", "pearson")
SENTENCE_MODES = ("monolingual", "cross_lingual")  # sentence StrucA: the method's, or cross_lingual_struca_loss
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


def struca_loss(student: Tensor, teacher: Tensor, *, tau: float = 0.1, form: str = "kl",
                valid: Tensor | None = None, impl: str = "auto", block_size: int = 1024) -> Tensor:
    """StrucA between student rows (N, d_S) and teacher rows (N, d_T); a 0-dim tensor.

    `valid` (N,) bool marks the rows that exist (None: all). `block_size` is the number of rows per
    block of the "chunked" implementation (any positive value; it need not divide N).
    """
    if form not in FORMS:
        raise ValueError(f"struca_loss: form must be one of {FORMS}, got {form!r}")
    if impl not in IMPLS:
        raise ValueError(f"struca_loss: impl must be one of {IMPLS}, got {impl!r}")
    if tau <= 0:
        raise ValueError(f"struca_loss: tau must be > 0, got {tau}")
    if block_size < 1:
        raise ValueError(f"struca_loss: block_size must be >= 1, got {block_size}")
    if impl == "auto":
        impl = "triton" if student.is_cuda and _triton_importable() else "chunked"
    if impl == "reference":
        return struca_reference(student, teacher, tau=tau, form=form, valid=valid)
    u_hat, v_hat, valid = prepare_rows(student, teacher, valid)
    if impl == "triton":
        from mmkd.kernels.struca_triton import StrucAFunction

        if student.dtype in (torch.float16, torch.bfloat16):  # the kernel's tiles stay in the student's dtype
            u_hat, v_hat = u_hat.to(student.dtype), v_hat.to(student.dtype)
        return StrucAFunction.apply(u_hat, v_hat, valid, tau, form, PEARSON_EPS)
    return ChunkedStrucA.apply(u_hat, v_hat, valid, tau, form, block_size)


def cross_lingual_struca_loss(student_y: Tensor, student_x: Tensor, teacher_x: Tensor, *, tau: float = 0.1,
                              form: str = "kl", bank: Tensor | None = None) -> Tensor:
    """Sentence StrucA across languages (this project's variant; config struct_sent_mode=cross_lingual).

    student_y, student_x: the student's projected sentence embeddings P_s e^S(y_b), P_s e^S(x_b)
    (B, d_E); teacher_x: e^T(x_b) (B, d_E), the teacher's sentence embedding. Over every column j, the
    diagonal included:
        A^S_ij = cos(P_s e^S(y_i), P_s e^S(x_j)) / tau,   A^T_ij = cos(e^T(x_i), e^T(x_j)) / tau
        L = 1/2 [ mean_i D(A^T_i., A^S_i.) + mean_j D(A^T_.j, A^S_.j) ]
    with D the StrucA row loss of `form` (KL of the softmaxes, or 1 - pearson). The teacher's row i
    peaks at its own x_i (cos = 1), so its distribution is a soft translation target: y_i must be
    nearer x_i than any x_j, and the x_j as near as the teacher puts x_j to x_i, in both retrieval
    directions (rows: y -> x, columns: x -> y). The method's monolingual form (section 4) compares
    the student's y with each other, on raw states, with the diagonal left out, so nothing in it
    pulls a translation towards its source.
    bank: teacher sentence embeddings e^T(b_k) (K, d_E) of other sentences (config struct_bank_size),
    appended as K more columns to the rows only: A^S_ik = cos(P_s e^S(y_i), e^T(b_k)) / tau against
    A^T_ik = cos(e^T(x_i), e^T(b_k)) / tau, so each y_i also meets K negatives (a memory bank of
    targets, Wu et al. 2018) while the columns (x -> y) keep the batch's B rows. The bank gets no
    gradient.
    B < 2 gives 0 (a gradient of zeros). Dense B x (B + K): meant for batch-sized B and K up to a few
    thousand. Computed in fp32 (fp64 kept); the teacher gets no gradient.
    Raises ValueError on mismatched shapes, an unknown form or tau <= 0.
    """
    if not student_y.shape == student_x.shape == teacher_x.shape or teacher_x.dim() != 2:
        raise ValueError(f"cross_lingual_struca_loss: expected three (B, d_E) tensors, got {tuple(student_y.shape)}, "
                         f"{tuple(student_x.shape)}, {tuple(teacher_x.shape)}")
    if bank is not None and (bank.dim() != 2 or bank.shape[1] != teacher_x.shape[1]):
        raise ValueError(f"cross_lingual_struca_loss: bank must be (K, {teacher_x.shape[1]}), got {tuple(bank.shape)}")
    if form not in FORMS:
        raise ValueError(f"cross_lingual_struca_loss: form must be one of {FORMS}, got {form!r}")
    if tau <= 0:
        raise ValueError(f"cross_lingual_struca_loss: tau must be > 0, got {tau}")
    dtype = torch.promote_types(student_y.dtype, torch.float32)
    if student_y.shape[0] < 2:
        return (student_y.to(dtype).sum() + student_x.to(dtype).sum()) * 0.0
    y_hat, x_hat = (F.normalize(t.to(dtype), dim=1, eps=NORM_EPS) for t in (student_y, student_x))
    t_hat = F.normalize(teacher_x.detach().to(dtype), dim=1, eps=NORM_EPS)
    targets = t_hat
    if bank is not None:
        targets = torch.cat([t_hat, F.normalize(bank.detach().to(dtype), dim=1, eps=NORM_EPS)])
    batch = student_y.shape[0]
    a_s = torch.cat([y_hat @ x_hat.T, y_hat @ targets[batch:].T], dim=1) / tau  # (B, B + K)
    a_t = t_hat @ targets.T / tau
    y_to_x = row_losses_reference(a_s, a_t, torch.ones_like(a_s, dtype=torch.bool), form).mean()
    in_batch = torch.ones(batch, batch, dtype=torch.bool, device=a_s.device)
    x_to_y = row_losses_reference(a_s[:, :batch].T, a_t[:, :batch].T, in_batch, form).mean()
    return (y_to_x + x_to_y) / 2


def _triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _logit_blocks(u_hat: Tensor, v_hat: Tensor, valid: Tensor, start: int, stop: int,
                  tau: float) -> tuple[Tensor, Tensor, Tensor]:
    """Rows start:stop of A^S and A^T, (R, N) each, and their column mask (valid j, j != i)."""
    a_s = torch.mm(u_hat[start:stop], u_hat.T).div_(tau)
    a_t = torch.mm(v_hat[start:stop], v_hat.T).div_(tau)
    cols = torch.arange(u_hat.shape[0], device=u_hat.device)
    rows = torch.arange(start, stop, device=u_hat.device)
    columns = valid[None, :] & (cols[None, :] != rows[:, None])
    return a_s, a_t, columns


def _block_forward(a_s: Tensor, a_t: Tensor, columns: Tensor, form: str) -> tuple[Tensor, Tensor]:
    """Row losses (R,) of one block and the per-row statistics (R, k) its backward needs.

    kl: (lse_s, lse_t), the log-sum-exps of the masked rows. pearson: (mean_s, mean_t, s_s, s_t, r)
    with s = sqrt(variance + PEARSON_EPS) and r the row's correlation. a_s and a_t are overwritten.
    """
    if form == "kl":
        outside = ~columns
        lse_s = torch.logsumexp(a_s.masked_fill_(outside, MASKED_LOGIT), dim=1)
        lse_t = torch.logsumexp(a_t.masked_fill_(outside, MASKED_LOGIT), dim=1)
        log_p_t = a_t.sub_(lse_t[:, None])
        log_ratio = log_p_t - a_s.sub_(lse_s[:, None])
        terms = log_ratio.mul_(log_p_t.exp_()).masked_fill_(outside, 0.0)
        return terms.sum(dim=1), torch.stack((lse_s, lse_t), dim=1)
    weight = columns.to(a_s.dtype)
    count = weight.sum(dim=1).clamp_min(1.0)
    mean_s = (a_s * weight).sum(dim=1) / count
    mean_t = (a_t * weight).sum(dim=1) / count
    centred_s = a_s.sub_(mean_s[:, None]).mul_(weight)
    centred_t = a_t.sub_(mean_t[:, None]).mul_(weight)
    cov = (centred_s * centred_t).sum(dim=1) / count
    s_s = torch.sqrt((centred_s * centred_s).sum(dim=1) / count + PEARSON_EPS)
    s_t = torch.sqrt((centred_t * centred_t).sum(dim=1) / count + PEARSON_EPS)
    r = cov / (s_s * s_t)
    return 1.0 - r, torch.stack((mean_s, mean_t, s_s, s_t, r), dim=1)


def _block_grad(a_s: Tensor, a_t: Tensor, columns: Tensor, stats: Tensor, form: str) -> Tensor:
    """d(row loss)/dA^S for one block (R, N), zero outside `columns`. a_s and a_t are overwritten.

    kl: p^S_ij - p^T_ij.  pearson, with centred rows c^S, c^T over the row's n_i columns:
    -(c^T_ij / (s_s s_t) - r c^S_ij / s_s^2) / n_i.
    """
    outside = ~columns
    if form == "kl":
        p_s = a_s.masked_fill_(outside, MASKED_LOGIT).sub_(stats[:, 0:1]).exp_()
        p_t = a_t.masked_fill_(outside, MASKED_LOGIT).sub_(stats[:, 1:2]).exp_()
        return p_s.sub_(p_t).masked_fill_(outside, 0.0)
    mean_s, mean_t, s_s, s_t, r = stats.unbind(dim=1)
    count = columns.sum(dim=1).clamp_min(1).to(a_s.dtype)
    centred_s = a_s.sub_(mean_s[:, None]).mul_((r / (s_s * s_s * count))[:, None])
    centred_t = a_t.sub_(mean_t[:, None]).mul_((1.0 / (s_s * s_t * count))[:, None])
    return centred_s.sub_(centred_t).masked_fill_(outside, 0.0)


class ChunkedStrucA(torch.autograd.Function):
    """StrucA on normalised rows in row blocks, O(N x block) memory, recomputing blocks in backward.

    forward(u_hat (N, d_S), v_hat (N, d_T), valid (N,) bool, tau, form, block_size) -> 0-dim loss,
    the same value as `struca_reference`; only per-row statistics (N, 2 or 5) are saved. backward
    gives dL/du_hat = (G + G^T) u_hat / tau, G = dL/dA^S built one row block at a time: block rows
    get G_blk u_hat, and through G^T every row j gets G_blk[:, j]^T u_hat[blk]. Normalisation is
    differentiated by autograd outside (prepare_rows); v_hat gets no gradient.
    """

    @staticmethod
    def forward(ctx, u_hat: Tensor, v_hat: Tensor, valid: Tensor, tau: float, form: str,
                block_size: int) -> Tensor:
        n = u_hat.shape[0]
        rows = valid & (valid.sum() - valid.long() >= 2)
        total = u_hat.new_zeros(())
        stats = []
        for start in range(0, n, block_size):
            stop = min(start + block_size, n)
            a_s, a_t, columns = _logit_blocks(u_hat, v_hat, valid, start, stop, tau)
            per_row, block_stats = _block_forward(a_s, a_t, columns, form)
            total += per_row.masked_fill_(~rows[start:stop], 0.0).sum()
            stats.append(block_stats)
        n_rows = rows.sum().clamp_min(1)
        stats = torch.cat(stats) if stats else u_hat.new_zeros(0, 5)
        ctx.save_for_backward(u_hat, v_hat, valid, rows, stats)
        ctx.n_rows, ctx.tau, ctx.form, ctx.block_size = n_rows, tau, form, block_size
        return total / n_rows

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        u_hat, v_hat, valid, rows, stats = ctx.saved_tensors
        row_weight = rows.to(u_hat.dtype) * (grad_output / (ctx.n_rows * ctx.tau))
        grad_u = torch.zeros_like(u_hat)
        for start in range(0, u_hat.shape[0], ctx.block_size):
            stop = min(start + ctx.block_size, u_hat.shape[0])
            a_s, a_t, columns = _logit_blocks(u_hat, v_hat, valid, start, stop, ctx.tau)
            g = _block_grad(a_s, a_t, columns, stats[start:stop], ctx.form)
            g.mul_(row_weight[start:stop, None])
            grad_u[start:stop] += g @ u_hat
            grad_u += g.T @ u_hat[start:stop]
        return grad_u, None, None, None, None, None
