"""Chunk-sized work shared by the merge methods (`merge_methods`, `topk`): a delta's entries
are read a block at a time and worked on in chunks small enough that every buffer of a merge
(a few per delta) stays in the core's cache, in preallocated buffers, on a shared pool of threads.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import torch

from skillgraft.vectors import arithmetic

Part = tuple[torch.Tensor, "torch.Tensor | None", float]  # as in arithmetic.combine_blockwise
Reader = Callable[[int, int], Part]  # entries [start, stop) of one delta, as a part (read, not yet computed)

CHUNK = 1 << 16  # entries worked on at once: every buffer of a merge (a few per delta) stays in the core's cache

class Workspace:
    """Preallocated chunk buffers: a fresh tensor per step would cost more than the step
    (measured: a 64K-entry float32 clone 0.76 ns/entry, a copy into an existing one 0.10)."""

    def __init__(self):
        self.delta = torch.empty(CHUNK, dtype=torch.float32)
        self.values = torch.empty(CHUNK, dtype=torch.float32)  # magnitudes, draws, products
        self.mask = torch.empty(CHUNK, dtype=torch.bool)  # entries to count in the second top-k pass
        self.factor = torch.empty(CHUNK, dtype=torch.float32)  # a mask as 1.0/0.0, multiplied in as peft's masks are
        self.sign = torch.empty(CHUNK, dtype=torch.float32)
        self.count = torch.empty(CHUNK, dtype=torch.float32)
        self.key = torch.empty(CHUNK, dtype=torch.int32)
        self.ones = torch.ones(CHUNK, dtype=torch.int64)
        self._agreements: list[torch.Tensor] = []

    def agreements(self, count: int) -> list[torch.Tensor]:
        """`count` chunk buffers for ties' per-delta agreement masks (1.0/0.0)."""
        while len(self._agreements) < count:
            self._agreements.append(torch.empty(CHUNK, dtype=torch.float32))
        return self._agreements[:count]

    def load(self, part: Part, chunk: slice, out: torch.Tensor | None = None) -> torch.Tensor:
        """The delta's entries in `chunk` of `part`, in float32, written to `out` (default: the
        workspace's delta buffer)."""
        return arithmetic.term(*part, chunk, self.delta[:chunk.stop - chunk.start] if out is None else out)

    def magnitude_bits(self, values: torch.Tensor) -> torch.Tensor:
        """|values| as int32 bit patterns, which order like the magnitudes (NaN above +inf, as
        torch.topk ranks it)."""
        return torch.abs(values, out=self.values[:values.numel()]).view(torch.int32)

def chunk_slices(numel: int) -> Iterator[slice]:
    return (slice(start, min(start + CHUNK, numel)) for start in range(0, numel, CHUNK))


def flat(part: Part) -> Part:
    first, second, scale = part
    return first.reshape(-1), None if second is None else second.reshape(-1), scale

_POOL: ThreadPoolExecutor | None = None


def in_parallel(calls: list[Callable]) -> list:
    """The calls' results, run on a shared pool of threads (one per core): each delta's reads
    and its top-k passes are independent, and file reads and torch's kernels release the GIL."""
    global _POOL
    if len(calls) == 1:
        return [calls[0]()]
    if _POOL is None:
        _POOL = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="skillgraft-merge")
    return [future.result() for future in [_POOL.submit(call) for call in calls]]
