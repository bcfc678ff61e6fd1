"""Seeds derived from several integers (collator seed, epoch, batch rows), stable across processes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import torch


def derive_seed(*parts: int | Iterable[int]) -> int:
    """A 63-bit seed hashed (blake2b) from integers and sequences of integers, in order.

    Unlike `hash()`, the result is the same in every process and Python run; (1, 0) and (0, 1) differ.
    """
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        values = np.atleast_1d(np.asarray(part, dtype=np.int64))
        digest.update(len(values).to_bytes(8, "little"))
        digest.update(values.astype("<i8").tobytes())
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def seeded_generator(*parts: int | Iterable[int]) -> torch.Generator:
    """A CPU `torch.Generator` seeded with `derive_seed(*parts)`."""
    return torch.Generator().manual_seed(derive_seed(*parts))
