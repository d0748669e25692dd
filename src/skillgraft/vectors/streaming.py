"""The write pipeline every streamed output shares (extract, graft, vector combine).

One worker thread reads and computes the next tensors while the calling thread writes and
hashes the current one; results that would hold NaN/Inf stop the write before anything is
published.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

import torch

from skillgraft.checkpoint import PlannedTensor, ShardedWriter
from skillgraft.errors import UserError
from skillgraft.vectors import arithmetic
from skillgraft.vectors.progress import Progress


def refuse_nonfinite(tensor: torch.Tensor, name: str, allow_nonfinite: bool, out: Path) -> None:
    """Stop the whole write (nothing is published) when a result holds NaN/Inf, unless allowed."""
    if not allow_nonfinite and not arithmetic.all_finite(tensor):
        bad = arithmetic.nonfinite_count(tensor)
        raise UserError(f"tensor {name!r} would hold {bad} NaN/Inf values; nothing was written to {out} "
                        "(pass --allow-nonfinite to keep them)")


@contextmanager
def single_torch_thread():
    """Kernels on one thread while streaming: the worker computes cache-sized blocks while
    the main thread writes and hashes, so a second intra-op thread mostly contends.
    Measured on the 2-core dev machine, idle, 0.8B synthetic Llama `graft --delta`: 4.7–4.9 s
    with this pin vs 5.0–5.2 s without (3 runs each, warm cache). A lone kernel does gain
    from 2 threads (97 vs 164 ms per 11.5M bf16 entries), but not with the writer busy
    (165 vs 168 ms)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def stream_tensors(plan: list[PlannedTensor], produce, writer: ShardedWriter, progress: Progress,
                   nbytes_of, depth: int = 2) -> dict[str, str]:
    """Produce (read + compute) tensors in a worker thread while this thread writes them.

    Reads, torch kernels and file writes all release the GIL, so I/O and arithmetic overlap;
    at most `depth` finished tensors wait for the writer, which keeps memory bounded.
    """
    pending = deque()
    upcoming = iter(plan)
    with single_torch_thread(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="skillgraft-read") as pool:
        try:
            for planned in islice(upcoming, depth):
                pending.append((planned, pool.submit(produce, planned)))
            while pending:
                planned, future = pending.popleft()
                data = future.result()
                following = next(upcoming, None)
                if following is not None:
                    pending.append((following, pool.submit(produce, following)))
                writer.write(planned.name, data)
                progress.advance(nbytes_of(planned.name))
            return writer.close()
        finally:
            for _, future in pending:
                future.cancel()
            writer.abort()
