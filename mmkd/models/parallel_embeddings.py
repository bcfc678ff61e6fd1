"""Word embeddings of a new vocabulary fitted on parallel sentences (`mmkd init-student`, step 3b).

A token the source (English) encoder does not know starts from the mean of its sub-token rows
(`initial_word_embeddings`): for "Speichern" that is the mean of English pieces such as "spei", "##ch",
"##ern", which says nothing of its meaning. Parallel pairs say more: a translation y of x should
have, on average, the input embeddings x has. So, with A the (P, V_S) matrix whose row p is the
bag-of-tokens mean of sentence p in the student's vocabulary (each pair gives a row for its
translation y and one for its English x) and B the (P, d) mean of the source's input embeddings of
the English x of that row, the free rows E_U (tokens not copied from the source) solve the ridge
problem

    min_{E_U}  || A_U E_U - (B - A_F E_F) ||^2 + lam || E_U - E0_U ||^2

with E_F the copied rows held fixed and E0 the sub-token means, so a token seen in few sentences
stays near its E0. The normal equations (A_U^T A_U + lam I) E_U = A_U^T (B - A_F E_F) + lam E0_U are
solved by conjugate gradients, every column at once. This is the bag-of-words form of what
WECHSEL (Minixhofer et al., NAACL 2022) and FOCUS (Dobler & de Melo, EMNLP 2023) do with aligned word
vectors or token similarities: a new token is a mixture of source embeddings chosen by where it is
used, here read from the parallel corpus itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

RIDGE = 0.1  # lam: a token's pull towards its sub-token mean, against ~10 sentences at length ~10
TOLERANCE = 1e-4  # conjugate gradients stop at this relative residual
MAX_ITERATIONS = 500
EMBEDDING_INITS = ("subwords", "parallel")  # init-student --embedding-init


@dataclass
class ParallelFitReport:
    pairs: int  # parallel pairs used (each gives two rows: y and x)
    fitted: int  # free tokens seen in at least one row (the others keep their sub-token mean)
    iterations: int  # conjugate-gradient iterations
    relative_residual: float  # |(A^T A + lam I) E - rhs| / |rhs| after the last iteration
    mse_before: float  # mean squared error of A E against B per row and dimension, sub-token means
    mse_after: float  # the same after the fit


def bag_matrix(id_lists: Sequence[Sequence[int]], num_columns: int) -> Tensor:
    """(len(id_lists), num_columns) sparse CSR: row p holds count / |ids| at each distinct id of ids."""
    rows = [p for p, ids in enumerate(id_lists) for _ in ids]
    cols = [i for ids in id_lists for i in ids]
    vals = [1.0 / len(ids) for ids in id_lists for _ in ids]
    coo = torch.sparse_coo_tensor(torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1),
                                  torch.tensor(vals, dtype=torch.float32), size=(len(id_lists), num_columns),
                                  check_invariants=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.coalesce().to_sparse_csr()  # coalesce: repeated ids add up, columns sorted


def conjugate_gradients(apply, rhs: Tensor, start: Tensor, preconditioner: Tensor, *, tolerance: float,
                        max_iterations: int) -> tuple[Tensor, int, float]:
    """Solve apply(X) = rhs for a symmetric positive definite linear `apply`, one preconditioned CG per
    column of rhs (n, d), with the Jacobi preconditioner `preconditioner` (n, 1) = 1 / diag; stops when
    |residual| <= tolerance |rhs|. Returns (X, iterations, relative residual norm). Golub & Van Loan,
    Matrix Computations, algorithm 11.5.1."""
    x = start.clone()
    r = rhs - apply(x)
    z = preconditioner * r
    p = z.clone()
    rz = (r * z).sum(0)
    target = tolerance * float(rhs.norm())
    iterations = 0
    while float(r.norm()) > target and iterations < max_iterations:
        ap = apply(p)
        alpha = rz / (p * ap).sum(0).clamp_min(1e-30)
        x += alpha * p
        r -= alpha * ap
        z = preconditioner * r
        rz_new = (r * z).sum(0)
        p = z + (rz_new / rz.clamp_min(1e-30)) * p
        rz = rz_new
        iterations += 1
    return x, iterations, float(r.norm()) / max(float(rhs.norm()), 1e-30)


def fit_parallel_embeddings(embeddings: Tensor, free: Tensor, student_tokenizer: PreTrainedTokenizerBase,
                            source_tokenizer: PreTrainedTokenizerBase, source_embeddings: Tensor,
                            english: Sequence[str], translations: Sequence[str], *, max_length: int = 128,
                            ridge: float = RIDGE) -> tuple[Tensor, ParallelFitReport]:
    """New student word embeddings (V_S, d): the rows `free` (bool (V_S,)) of `embeddings` refitted on
    the pairs (english[i], translations[i]) as the module docstring says; the other rows unchanged.
    Special tokens never take part; sentences are cut at `max_length` tokens."""
    student_ids = student_tokenizer(list(translations) + list(english), add_special_tokens=False,
                                    truncation=True, max_length=max_length)["input_ids"]
    source_ids = source_tokenizer(list(english), add_special_tokens=False, truncation=True,
                                  max_length=max_length)["input_ids"]
    unknown = source_tokenizer.unk_token_id
    source_ids = [[i for i in ids if i != unknown] for ids in source_ids]
    keep = [p for p in range(len(english)) if source_ids[p] and student_ids[p] and student_ids[len(english) + p]]
    rows = [student_ids[p] for p in keep] + [student_ids[len(english) + p] for p in keep]
    a = bag_matrix(rows, embeddings.shape[0])
    targets_once = torch.sparse.mm(bag_matrix([source_ids[p] for p in keep], source_embeddings.shape[0]),
                                   source_embeddings.float())
    targets = torch.cat([targets_once, targets_once])
    e0 = embeddings.float()
    fixed = e0 * (~free)[:, None]
    residual_target = targets - torch.sparse.mm(a, fixed)
    mask = free.float()[:, None]
    coo = a.to_sparse_coo()  # coalesced, as a is
    a_t = coo.t().to_sparse_csr()

    def apply(x: Tensor) -> Tensor:  # (A_U^T A_U + lam I) x, x zero outside the free rows
        return torch.sparse.mm(a_t, torch.sparse.mm(a, x * mask)) * mask + ridge * x * mask

    rhs = (torch.sparse.mm(a_t, residual_target) + ridge * e0) * mask
    column_squares = torch.zeros(embeddings.shape[0]).index_add_(0, coo.indices()[1], coo.values().pow(2))
    diagonal = column_squares + ridge  # of A^T A + lam I
    solved, iterations, relative = conjugate_gradients(apply, rhs, e0 * mask, (mask / diagonal[:, None]),
                                                       tolerance=TOLERANCE, max_iterations=MAX_ITERATIONS)
    update = free & (column_squares > 0)  # free tokens seen in at least one row
    fitted = embeddings.clone()
    fitted[update] = solved[update].to(embeddings.dtype)
    report = ParallelFitReport(
        pairs=len(keep), fitted=int(update.sum()), iterations=iterations, relative_residual=relative,
        mse_before=float((torch.sparse.mm(a, e0) - targets).pow(2).mean()),
        mse_after=float((torch.sparse.mm(a, fitted.float()) - targets).pow(2).mean()))
    return fitted, report
