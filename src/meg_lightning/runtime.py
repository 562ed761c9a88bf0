"""Process-level runtime settings shared by the stages."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run a block with ``n`` intra-op CPU threads, then restore the previous setting.

    For small tensors (FID on n x n Gram matrices, PPO's MLPs, tiny test models) extra threads
    cost more than they give, and on a shared CPU far more: measured on the 2-core project
    machine with another process busy, a 100-resample FID bootstrap took 0.15 s on 1 thread and
    17.9 s on 2 (each parallel region waits for a descheduled thread).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
