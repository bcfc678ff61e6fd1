"""Word embeddings fitted on parallel pairs (mmkd.models.parallel_embeddings): the solver against a
dense solve, the fit against the closed-form ridge solution (init-student's use of it on real tokenizers:
tests/test_models_init_student.py)."""

from __future__ import annotations

import pytest
import torch

from mmkd.models.parallel_embeddings import bag_matrix, conjugate_gradients, fit_parallel_embeddings


def test_bag_matrix_rows_are_token_means_with_repeats():
    dense = bag_matrix([[0, 2, 2], [1], []], 4).to_dense()
    expected = torch.tensor([[1 / 3, 0, 2 / 3, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(dense, expected)


@pytest.mark.parametrize("n,d", [(5, 1), (40, 7)])
def test_conjugate_gradients_solve_every_column_of_an_spd_system(n, d):
    torch.manual_seed(n)
    m = torch.randn(n, n, dtype=torch.float64)
    spd = m @ m.T + 0.5 * torch.eye(n, dtype=torch.float64)
    rhs = torch.randn(n, d, dtype=torch.float64)
    solved, iterations, residual = conjugate_gradients(lambda x: spd @ x, rhs, torch.zeros_like(rhs),
                                                       1 / spd.diagonal()[:, None], tolerance=1e-10,
                                                       max_iterations=10 * n)
    torch.testing.assert_close(solved, torch.linalg.solve(spd, rhs), rtol=1e-6, atol=1e-8)
    assert residual <= 1e-10 and 0 < iterations <= 10 * n


class ToyTokenizer:
    """Whitespace tokens -> ids of a fixed vocabulary (what fit_parallel_embeddings calls)."""

    unk_token_id = 0

    def __init__(self, vocab: list[str]):
        self.ids = {token: i for i, token in enumerate(vocab)}

    def __call__(self, texts, add_special_tokens=False, truncation=True, max_length=128):
        return {"input_ids": [[self.ids.get(word, 0) for word in text.split()][:max_length] for text in texts]}


def test_fit_is_the_closed_form_ridge_solution():
    """Source vocabulary: [UNK] cat dog the; student: [UNK] the chat chien le (the copied, the rest free)."""
    source = ToyTokenizer(["[UNK]", "cat", "dog", "the"])
    student = ToyTokenizer(["[UNK]", "the", "chat", "chien", "le"])
    torch.manual_seed(0)
    source_embeddings = torch.randn(4, 3, dtype=torch.float64)
    e0 = torch.randn(5, 3, dtype=torch.float64)
    e0[1] = source_embeddings[3]
    free = torch.tensor([False, False, True, True, True])
    english, french = ["the cat", "the dog", "cat", "the"], ["le chat", "le chien", "chat", "le"]
    fitted, report = fit_parallel_embeddings(e0, free, student, source, source_embeddings, english, french,
                                             ridge=0.1)
    # rows: the four translations, then the four English sentences, in the student's vocabulary
    a = bag_matrix([[4, 2], [4, 3], [2], [4], [1, 0], [1, 0], [0], [1]], 5).to_dense().double()
    targets = bag_matrix([[3, 1], [3, 2], [1], [3]], 4).to_dense().double() @ source_embeddings
    targets = torch.cat([targets, targets])
    a_free, a_fixed = a[:, free], a[:, ~free]
    lhs = a_free.T @ a_free + 0.1 * torch.eye(int(free.sum()), dtype=torch.float64)
    rhs = a_free.T @ (targets - a_fixed @ e0[~free]) + 0.1 * e0[free]
    expected = e0.clone()
    expected[free] = torch.linalg.solve(lhs, rhs)
    torch.testing.assert_close(fitted, expected.to(fitted.dtype), rtol=1e-4, atol=1e-5)
    assert torch.equal(fitted[~free], e0[~free])
    assert (report.pairs, report.fitted) == (4, 3)
    assert report.mse_after < report.mse_before


def test_a_token_seen_in_no_pair_keeps_its_row():
    source = ToyTokenizer(["[UNK]", "cat"])
    student = ToyTokenizer(["[UNK]", "chat", "hund"])
    e0 = torch.randn(3, 2)
    fitted, report = fit_parallel_embeddings(e0, torch.tensor([False, True, True]), student, source,
                                             torch.randn(2, 2), ["cat"] * 3, ["chat"] * 3)
    assert torch.equal(fitted[2], e0[2]) and not torch.equal(fitted[1], e0[1])
    assert report.fitted == 1
