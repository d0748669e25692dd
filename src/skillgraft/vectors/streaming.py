"""The write pipeline every streamed output shares (extract, graft, vector combine).

Every tensor moves in blocks of whole rows, never whole: a worker thread reads the inputs'
rows with positioned reads and computes one block at a time while the calling thread
writes and hashes the blocks before it, with at most `DEPTH` blocks waiting in between. So
memory is bounded by a few blocks, whatever the size of a tensor, and pass-through copies
move in pieces of `BLOCK_BYTES` too. A tensor whose result would hold NaN/Inf stops the
write before anything is published.

A producer must not keep small tensors alive from one block to the next (fill a
preallocated one instead): in the worker thread glibc places them between the freed
blocks, and the heap grows by about a block each time. Measured on the 70B-shaped
embedding (276 blocks): 4.2 GB peak with a 16-byte tensor kept per block, 330 MB when
the results are written into one preallocated tensor.
"""

from __future__ import annotations

import math
import queue
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from skillgraft.checkpoint import Checkpoint, PlannedTensor, ShardedWriter
from skillgraft.checkpoint.safetensors_file import TORCH_OF_CODE
from skillgraft.errors import UserError
from skillgraft.vectors import arithmetic
from skillgraft.vectors.progress import Progress

BLOCK_BYTES = 16 << 20  # a block's float32 size; pass-through copies move in pieces of this size
DEPTH = 4  # blocks that may wait between the worker and the writer

Parts = list[tuple[torch.Tensor, torch.Tensor | None, float]]


def blocks(shape: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    """Entry ranges [start, stop) of the flattened tensor, each a run of whole rows (leading
    dimension) of at most BLOCK_BYTES in float32, or one row when a row is larger; a single
    empty range for an empty tensor."""
    numel, row = math.prod(shape), math.prod(shape[1:])
    step = max(1, BLOCK_BYTES // 4 // max(row, 1)) * max(row, 1)
    yield from ((start, min(start + step, numel)) for start in range(0, numel, step))
    if numel == 0:
        yield 0, 0


def copied_blocks(checkpoint: Checkpoint, name: str) -> Iterator[bytes | bytearray]:
    """A tensor's stored bytes, unchanged, in pieces of BLOCK_BYTES (one empty piece when it has none)."""
    nbytes = checkpoint.tensors[name].nbytes
    for start in range(0, max(nbytes, 1), BLOCK_BYTES):
        yield checkpoint.read_raw(name, start, min(start + BLOCK_BYTES, nbytes))


def computed_blocks(planned: PlannedTensor, parts_of: Callable[[int, int], Parts], allow_nonfinite: bool,
                    out: Path, patches: Iterable = ()) -> Iterator[torch.Tensor]:
    """`planned`'s result, block by block: `arithmetic.combine_blockwise(parts_of(start, stop))`
    cast to the planned dtype. Each of `patches` (`.patch(result, start, stop) -> finite`) may
    then overwrite rows of a block. NaN/Inf are counted after the cast in every block; a
    tensor that holds any raises after its last block (the caller's atomic folder then
    publishes nothing), unless allowed."""
    out_dtype = TORCH_OF_CODE[planned.dtype]
    bad = 0
    for start, stop in blocks(planned.shape):
        result, finite = arithmetic.combine_blockwise(parts_of(start, stop), out_dtype)
        for patch in patches:
            finite = patch.patch(result, start, stop) and finite
        if not finite and not allow_nonfinite:
            bad += arithmetic.nonfinite_count(result)
        yield result
    if bad:
        raise UserError(f"tensor {planned.name!r} would hold {bad} NaN/Inf values; nothing was written to {out} "
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


_END = object()


def stream_tensors(plan: list[PlannedTensor], produce, writer: ShardedWriter, progress: Progress,
                   nbytes_of, depth: int = DEPTH) -> dict[str, str]:
    """Write every planned tensor, in plan order, from `produce(planned)`: an iterable of the
    tensor's pieces in order (tensors of the planned dtype, or raw bytes).

    A worker thread runs the producers while this thread writes and hashes; reads, torch
    kernels, file writes and sha256 all release the GIL, so I/O and arithmetic overlap. At
    most `depth` pieces wait for the writer. An error on either side stops both: the
    worker's is raised here, and on this side's the worker stops at its next piece.
    """
    pieces: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                pieces.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for planned in plan:
                for piece in produce(planned):
                    if not offer((planned.name, piece)):
                        return
            offer(_END)
        except BaseException as exc:  # handed to the writing thread, which raises it
            offer(exc)

    with single_torch_thread():
        worker = threading.Thread(target=work, name="skillgraft-read", daemon=True)
        worker.start()
        try:
            while (item := pieces.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                name, piece = item
                if writer.write(name, piece):
                    progress.advance(nbytes_of(name))
            return writer.close()
        finally:
            stop.set()
            worker.join()
            writer.abort()
