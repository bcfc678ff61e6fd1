"""Named parts of a training step, seen by torch.profiler: what `mmkd profile` splits step time into.

`phase(name)` wraps a block in the profiler range "mmkd/<name>" while a torch profiler records, and
ends it with a device synchronize on CUDA so that the range's wall time covers the block's kernels.
With no profiler recording it is a flag check (~1 us a block, measured on the 2-core CPU box; a
record_function alone costs ~6 us) and no synchronize (which would stall the GPU's queue).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

PREFIX = "mmkd/"


@contextmanager
def phase(name: str) -> Iterator[None]:
    """The profiler range PREFIX + `name` around the block, only while a profiler records."""
    if not torch._C._autograd._profiler_enabled():
        yield
        return
    with torch.profiler.record_function(PREFIX + name):
        yield
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()
