"""XWCL: InfoNCE over cosine similarities, and the gathering of negatives across ranks."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmkd.objectives.word import gather_candidates, xwcl_loss


def info_nce_loops(queries, candidates, positives, tau_w):
    """-log softmax(cos / tau_w)[positive], averaged, written out with math on python floats."""
    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    total = 0.0
    for q, pos in zip(queries.tolist(), positives.tolist()):
        logits = [cos(q, c) / tau_w for c in candidates.tolist()]
        total += math.log(sum(math.exp(x) for x in logits)) - logits[pos]
    return total / len(positives)


@pytest.mark.parametrize("tau_w", [0.05, 0.5])
def test_value_matches_loops(tau_w):
    gen = torch.Generator().manual_seed(0)
    queries = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    candidates = torch.randn(7, 6, generator=gen, dtype=torch.float64)
    positives = torch.tensor([0, 6, 3, 3])
    expected = info_nce_loops(queries, candidates, positives, tau_w)
    assert xwcl_loss(queries, candidates, positives, tau_w).item() == pytest.approx(expected, rel=1e-12)


def test_gradcheck_fp64():
    gen = torch.Generator().manual_seed(1)
    queries = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    candidates = torch.randn(6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    positives = torch.tensor([5, 0, 2])
    assert torch.autograd.gradcheck(lambda q, c: xwcl_loss(q, c, positives, 0.3), (queries, candidates),
                                    fast_mode=True)


def test_no_query_gives_zero_with_zero_gradient():
    queries = torch.randn(0, 4, requires_grad=True)
    candidates = torch.randn(5, 4, requires_grad=True)
    loss = xwcl_loss(queries, candidates, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(candidates.grad == 0)


def test_zero_vectors_stay_finite():
    queries = torch.zeros(2, 3, requires_grad=True)
    candidates = torch.cat([torch.zeros(1, 3), torch.randn(3, 3)]).requires_grad_(True)
    loss = xwcl_loss(queries, candidates, torch.tensor([0, 2]))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(4))  # every cosine is 0: uniform over 4 candidates
    assert torch.isfinite(queries.grad).all() and torch.isfinite(candidates.grad).all()


def test_gather_is_a_no_op_without_a_process_group():
    candidates = torch.randn(3, 2)
    gathered, offset = gather_candidates(candidates)
    assert gathered is candidates and offset == 0


def rank_rows(rank: int) -> torch.Tensor:
    """Rank r holds r + 2 rows of width 3, valued 10 r + row index."""
    return (10.0 * rank + torch.arange(rank + 2, dtype=torch.float32))[:, None].expand(-1, 3).contiguous()


def gather_worker(rank: int, world: int, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        local = rank_rows(rank).requires_grad_(True)
        gathered, offset = gather_candidates(local)
        weights = torch.arange(gathered.numel(), dtype=torch.float32).view_as(gathered)
        (gathered * weights).sum().backward()
        own_weights = weights[offset:offset + len(local)]
        torch.save((gathered.detach(), offset, local.grad, own_weights), f"{tmp}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gather_concatenates_variable_sizes_across_two_ranks(tmp_path):
    mp.spawn(gather_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    expected = torch.cat([rank_rows(0), rank_rows(1)])
    for rank in range(2):
        gathered, offset, grad, own_weights = torch.load(tmp_path / f"{rank}.pt")
        torch.testing.assert_close(gathered, expected)
        assert offset == (0, 2)[rank]
        torch.testing.assert_close(grad, own_weights)  # the local rows get exactly their own gradient
