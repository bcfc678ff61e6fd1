"""Rows of every data-parallel rank, concatenated in rank order, with the gradient kept on the local rows."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def gather_rows(rows: Tensor) -> tuple[Tensor, int]:
    """All ranks' rows (N_r, ...) concatenated in rank order, and where this rank's rows start.

    Ranks may hold different numbers of rows (sizes are exchanged, rows padded to the largest).
    Other ranks' rows are constants; this rank's slice is `rows` itself, so its gradient flows.
    Without an initialised process group, or with one rank: (rows, 0). Collective: every rank calls it.
    """
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return rows, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([rows.shape[0]], dtype=torch.long, device=rows.device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    padded = rows.detach().new_zeros((max(counts), *rows.shape[1:]))
    padded[: counts[rank]] = rows.detach()
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    pieces = [rows if r == rank else parts[r][: counts[r]] for r in range(world)]
    return torch.cat(pieces), sum(counts[:rank])
