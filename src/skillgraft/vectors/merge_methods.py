"""Merge methods for several task vectors on one tensor: sum, ties, dare, dare_ties, magnitude.

Computed a block of entries at a time (`TensorMerge`), so memory holds a few blocks whatever
the tensor size (a 70B model's embedding is 4.2 GB in float32), and written to give the same
bits as peft's reference implementations (`peft.utils.merge_utils`: `task_arithmetic`,
`ties`, `dare_linear`, `dare_ties`, `magnitude_prune`) on the same inputs; the tests check
that with `torch.equal`. Semantics, as in peft:

- `density` is the kept fraction for every method (DARE drops with p = 1 − density);
  density ≥ 1 keeps every entry (and DARE then does not rescale).
- magnitude trim keeps the `int(density · numel)` largest |entries|, found exactly by one or
  two counting passes over the blocks (`TopK`). Where several entries share the k-th largest
  magnitude, the lowest-numbered of them are kept. torch.topk (and so peft) keeps whichever
  of them its selection algorithm meets (neither the first nor the last, measured), which
  no blockwise pass can reproduce; so with such a tie the kept set can differ from peft's
  in which of the equal entries are kept, never in how many or in anything else.
- DARE keeps each entry with probability `density` (a Bernoulli mask) and divides the
  kept ones by `density`.
- ties elects, per entry, the sign of the sum of the *unweighted* trimmed deltas (ties go
  to +), then averages the weighted deltas that agree with it (disjoint mean: divided by
  how many agree, at least 1).

Every step after the selection is elementwise: peft's arithmetic step for step, without its
full-size temporaries (no stacked copy of the deltas, boolean masks, in-place products). The
merge rows of docs/benchmarks.md measure the whole graft against mergekit.

peft draws DARE's masks from torch's global generator; here each tensor gets its own
generator seeded from (seed, tensor name) by a stable hash, so a graft is reproducible
whatever the shard layout, the processing order or the threads. Drawing from a generator
seeded with `tensor_seed(seed, name)` gives the same masks as `torch.manual_seed` with
that number, which is how the tests feed peft the same masks.
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from skillgraft.vectors import arithmetic
from skillgraft.vectors.methods import REGISTRY


def tensor_seed(seed: int, name: str) -> int:
    """A 63-bit seed from the user's seed and the tensor name (stable across runs/platforms)."""
    digest = hashlib.sha256(f"skillgraft:{int(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator_for(seed: int, name: str) -> torch.Generator:
    """The CPU generator DARE draws `name`'s masks from."""
    return torch.Generator().manual_seed(tensor_seed(seed, name))


Part = tuple[torch.Tensor, "torch.Tensor | None", float]  # as in arithmetic.combine_blockwise
Reader = Callable[[int, int], Part]  # entries [start, stop) of one delta, as a part (read, not yet computed)

CHUNK = 1 << 16  # entries worked on at once: every buffer of a merge (a few per delta) stays in the core's cache
_SHIFT = 19  # the first pass counts a magnitude's upper 12 bits (4096 bins), the second its lower 19
_KEEP_NONE = (1 << 31) - 1  # a threshold no magnitude's bits exceed (NaN's are at most this)


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


@dataclass
class TopK:
    """The exact set of the k largest magnitudes of one delta, applied chunk by chunk in order.

    A float32 magnitude's bits, read as an int32, order like its value, so the k-th largest
    magnitude is found by counting, not sorting. A sample spread over the tensor (`sample`)
    plans the passes:

    - a tensor no larger than the sample is its own sample: the threshold comes from it, no pass;
    - where the sample's k-th largest value is shared by enough entries that the tensor's k-th
      is that value too (deltas of bf16 or fp16 checkpoints take few distinct values: at
      density 0.5 a fifth of a tensor can share the threshold), one pass counts the entries
      above and equal to it, and confirms it;
    - otherwise (or where the count refutes the sample) two counting passes: the upper 12 bits
      of every entry, then the lower 19 bits of the entries in the bin where the k-th falls.

    Kept: every entry above the threshold, and of the entries equal to it the lowest-numbered
    ones, until k are kept. Memory: the sample (256 KB; a tensor within reach of it, at most
    512 rows, is held as int32 bits) and the histograms (a few MB), whatever the tensor size.
    """

    threshold: int  # the k-th largest magnitude, as its float32 bits
    ties: int  # entries equal to the threshold still to keep, lowest index first

    SAMPLE_READS = 256  # reads of the sample that plans the passes, spread evenly over the tensor
    SAMPLE_SPAN = 256  # entries kept per read (a read is of whole rows: a reader of rows matched by token reads no less)

    @classmethod
    def find(cls, read: Reader, ranges: list[tuple[int, int]], k: int, row: int = 1) -> TopK:
        """One delta's top k, in as few passes over its entries as the sample allows; `row`:
        entries per row of the tensor (reads cover whole rows, as `ranges` do)."""
        if k == 0:
            return cls(_KEEP_NONE, 0)
        numel, work = ranges[-1][1], Workspace()
        sample = _sample(read, ranges, row, cls.SAMPLE_READS, cls.SAMPLE_SPAN, work)
        flat_sample, size = sample.view(-1), sample.numel()
        rank = k if size == numel else min(size, max(1, round(k * size / numel)))
        guess = int(torch.kthvalue(flat_sample, size - rank + 1).values)
        above_per_read, equal_per_read = (sample > guess).sum(-1), (sample == guess).sum(-1)
        above, equal = int(above_per_read.sum()), int(equal_per_read.sum())
        if size == numel:
            return cls(guess, k - above)
        # the sample's counts vary by how alike the rows read are: their spread across the reads
        # (one read is a few rows) gives the standard error, the binomial one at least
        binomial = math.sqrt(size * (k / numel) * (1 - k / numel))
        error_above = max(binomial, math.sqrt(len(sample)) * float(above_per_read.double().std()))
        error_below = max(binomial, math.sqrt(len(sample)) * float((above_per_read + equal_per_read).double().std()))
        if above + 2 * error_above < rank <= above + equal - 2 * error_below:  # the k-th is `guess` itself
            above, equal = _count_around(read, ranges, guess, work)
            if above < k <= above + equal:
                return cls(guess, k - above)
        return cls._counted(read, ranges, k, work)

    @classmethod
    def _counted(cls, read: Reader, ranges: list[tuple[int, int]], k: int, work: Workspace) -> TopK:
        """The top k by two counting passes: upper bits of all entries, lower bits of one bin's."""
        high = torch.zeros(1 << (31 - _SHIFT), dtype=torch.int64)
        for start, stop in ranges:
            for bits in _magnitudes(flat(read(start, stop)), stop - start, work):
                high += torch.bincount(torch.bitwise_right_shift(bits, _SHIFT, out=work.key[:bits.numel()]),
                                       minlength=high.numel())
        upper, above_upper = _kth_bin(high, k)
        low = torch.zeros(1 << _SHIFT, dtype=torch.int64)
        for start, stop in ranges:
            for bits in _magnitudes(flat(read(start, stop)), stop - start, work):
                inside = bits[torch.eq(torch.bitwise_right_shift(bits, _SHIFT, out=work.key[:bits.numel()]),
                                       upper, out=work.mask[:bits.numel()])]
                low.index_add_(0, inside.bitwise_and_((1 << _SHIFT) - 1), work.ones[:inside.numel()])
        lower, above = _kth_bin(low, k - above_upper)
        return cls((upper << _SHIFT) | lower, k - above_upper - above)

    @classmethod
    def find_all(cls, readers: list[Reader], ranges: list[tuple[int, int]], k: int, row: int = 1) -> list[TopK]:
        """Each delta's top k, the deltas on parallel threads (the kernels release the GIL, and
        while a tensor's thresholds are searched the graft's writer has nothing to write)."""
        return in_parallel([lambda read=read: cls.find(read, ranges, k, row) for read in readers])

    def mask(self, values: torch.Tensor, work: Workspace) -> torch.Tensor:
        """1.0 where the next entries are among the k largest, else 0.0 (call on every entry, in order)."""
        bits = work.magnitude_bits(values)
        size = values.numel()
        if self.ties:  # the tied entries of this chunk, all kept when as many ties are left
            equal = int(torch.eq(bits, self.threshold, out=work.factor[:size]).sum())
            if equal <= self.ties:
                self.ties -= equal
                return torch.ge(bits, self.threshold, out=work.factor[:size])
            keep = torch.gt(bits, self.threshold, out=work.factor[:size])
            keep[(bits == self.threshold).nonzero().view(-1)[:self.ties]] = 1.0
            self.ties = 0
            return keep
        return torch.gt(bits, self.threshold, out=work.factor[:size])


def _magnitudes(part: Part, size: int, work: Workspace) -> Iterator[torch.Tensor]:
    """A block's magnitudes as int32 bits, chunk by chunk."""
    for chunk in chunk_slices(size):
        yield work.magnitude_bits(work.load(part, chunk))


def _sample(read: Reader, ranges: list[tuple[int, int]], row: int, reads: int, span: int,
            work: Workspace) -> torch.Tensor:
    """Magnitude bits of a sample: `reads` reads of whole rows spread evenly over the tensor,
    `span` entries evenly spaced kept from each (a 2-D tensor, one row per read); or every
    entry (1-D) when the reads would cover most of the tensor."""
    numel = ranges[-1][1]
    rows_per_read = -(-span // row)
    total_rows = numel // row
    if numel <= 2 * reads * rows_per_read * row:
        spans = ranges
        sample = torch.empty(numel, dtype=torch.int32)
        position = 0
        for start, stop in spans:
            for bits in _magnitudes(flat(read(start, stop)), stop - start, work):
                sample[position:position + bits.numel()] = bits
                position += bits.numel()
        return sample
    sample = torch.empty(reads, span, dtype=torch.int32)
    size = rows_per_read * row
    every = torch.arange(span) * size // span  # the entries kept of each read
    read_bits = torch.empty(size, dtype=torch.int32)
    for index in range(reads):
        first = index * (total_rows - rows_per_read) // (reads - 1)
        position = 0
        for bits in _magnitudes(flat(read(first * row, first * row + size)), size, work):
            read_bits[position:position + bits.numel()] = bits
            position += bits.numel()
        torch.index_select(read_bits, 0, every, out=sample[index])
    return sample


def _count_around(read: Reader, ranges: list[tuple[int, int]], value: int, work: Workspace) -> tuple[int, int]:
    """(entries whose magnitude bits are above `value`, entries equal to it), in one pass."""
    above = equal = 0
    for start, stop in ranges:
        for bits in _magnitudes(flat(read(start, stop)), stop - start, work):
            counts = work.factor[:bits.numel()]  # 0/1 as float32: a chunk's sum is exact
            above += int(torch.gt(bits, value, out=counts).sum())
            equal += int(torch.eq(bits, value, out=counts).sum())
    return above, equal


def _kth_bin(histogram: torch.Tensor, k: int) -> tuple[int, int]:
    """(bin holding the k-th largest entry, how many entries lie in higher bins)."""
    from_top = histogram.flip(0).cumsum(0)
    position = int(torch.searchsorted(from_top, k))
    return histogram.numel() - 1 - position, int(from_top[position] - histogram[-1 - position])


def skipped_generator(generator: torch.Generator, draws: int) -> torch.Generator:
    """A copy of `generator` advanced by `draws` float32 uniforms (drawn a chunk at a time):
    where the i-th delta's draws start when the deltas draw one after another. Uniforms drawn
    in pieces from one generator are those drawn at once (the tests compare with peft)."""
    copy = torch.Generator()
    copy.set_state(generator.get_state())
    scratch = torch.empty(min(draws, CHUNK), dtype=torch.float32)
    for start in range(0, draws, CHUNK):
        torch.rand(min(CHUNK, draws - start), generator=copy, out=scratch[:draws - start])
    return copy


class TensorMerge:
    """One tensor's merge of several deltas, computed a block at a time, whatever its size.

    `readers` give each delta's entries (unscaled), `ranges` the blocks that cover the tensor
    (the order the caller will ask for them), `row` the entries per row (every read covers
    whole rows). Magnitude trimming first reads each delta once or twice to find its exact
    top-k threshold (`TopK`); DARE gives each delta a generator
    positioned where its draws start when the deltas draw one after the other from
    `generator` (as peft draws them). Then `block(start, stop)`, asked for in order, reads
    the deltas' entries and applies the method a cache-sized chunk at a time: every step
    after the selection is elementwise, so the blocks hold the bits of peft's whole-tensor
    arithmetic, step for step:

    - trim / DARE: d·mask (DARE then ÷ density; the draws are peft's
      `torch.bernoulli(full_like(d, density))`, which on CPU keeps an entry when one uniform
      drawn for it is below p: `rand < density` from the same generator state);
    - ties' election: +1 where Σ d (unweighted, in order) ≥ 0, else −1;
    - disjoint mean: Σ (w·d)·[d·sign > 0] ÷ max(1, how many agree) (peft's `d.sign() == sign`;
      zeros never agree);
    - otherwise Σ w·d, left to right.
    """

    def __init__(self, method: str, readers: list[Reader], weights: list[float], ranges: list[tuple[int, int]],
                 *, density: float | None = None, generator: torch.Generator | None = None, row: int = 1):
        if method not in REGISTRY:
            raise ValueError(f"unknown merge method {method!r}")
        self.kind = REGISTRY[method]
        if self.kind.takes_density and (density is None or not 0 < density <= 1):
            raise ValueError(f"{method} needs a density in (0, 1], got {density!r}")
        numel = ranges[-1][1] if ranges else 0
        self.readers, self.density = readers, density
        self.weights = [float(torch.tensor(w, dtype=torch.float32)) for w in weights]  # peft's float32 weights
        self.works = [Workspace() for _ in readers]  # each delta's selection's buffers
        self.selected = [torch.empty(0) for _ in readers]  # each delta's selected block
        self.combining = [Workspace(), Workspace()]  # the combination's, one per half of a block
        self.position = 0
        self.trims, self.drops = None, None
        if self.kind.trims and density < 1:
            self.trims = TopK.find_all(readers, ranges, int(density * numel), row)
        if self.kind.drops and density < 1:
            generator = generator if generator is not None else torch.Generator().manual_seed(0)
            self.drops = in_parallel([lambda i=i: skipped_generator(generator, i * numel) for i in range(len(readers))])

    def block(self, start: int, stop: int) -> torch.Tensor:
        """The merged delta of entries [start, stop) (1-D float32); blocks must come in order.

        Two stages, each on parallel threads: every delta's entries selected (trimmed or
        dropped) on its own thread, in order, as its top-k ties and its DARE draws require;
        then the combination, which is elementwise, split between threads by halves."""
        if start != self.position:
            raise ValueError(f"blocks must be merged in order: asked for {start}, next is {self.position}")
        self.position = stop
        size = stop - start
        parts = in_parallel([lambda read=read: flat(read(start, stop)) for read in self.readers])
        selected = in_parallel([lambda index=index, part=part: self._selected(index, part, size)
                                for index, part in enumerate(parts)])
        merged = torch.empty(size, dtype=torch.float32)
        chunks = list(chunk_slices(size))
        halves = [half for half in (chunks[:len(chunks) // 2], chunks[len(chunks) // 2:]) if half]
        in_parallel([lambda half=half, work=work: self._combine(selected, merged, half, work)
                     for half, work in zip(halves, self.combining)])
        return merged

    def _selected(self, index: int, part: Part, size: int) -> torch.Tensor:
        """Delta `index` on the block's first `size` entries, trimmed or dropped as the method
        says, in its own block buffer (one thread per delta: its chunks go in order)."""
        work = self.works[index]
        if self.selected[index].numel() < size:
            self.selected[index] = torch.empty(size, dtype=torch.float32)
        block = self.selected[index][:size]
        for chunk in chunk_slices(size):
            delta = work.load(part, chunk, out=block[chunk])
            if self.trims is not None:
                delta.mul_(self.trims[index].mask(delta, work))
            if self.drops is not None:
                draws = torch.rand(delta.numel(), generator=self.drops[index], out=work.values[:delta.numel()])
                delta.mul_(torch.lt(draws, self.density, out=work.factor[:delta.numel()])).div_(self.density)
        return block

    def _combine(self, selected: list[torch.Tensor], merged: torch.Tensor, chunks: list[slice],
                 work: Workspace) -> None:
        """The combination of the selected deltas on `chunks` of the block, into `merged`."""
        for chunk in chunks:
            deltas, out = [block[chunk] for block in selected], merged[chunk]
            if self.kind.elects:
                self._disjoint_mean(deltas, out, work)
            else:
                out.copy_(deltas[0]).mul_(self.weights[0])
                for delta, weight in zip(deltas[1:], self.weights[1:]):
                    out.add_(delta.mul_(weight))

    def _disjoint_mean(self, deltas: list[torch.Tensor], out: torch.Tensor, work: Workspace) -> None:
        """peft's ties combination on one chunk, a kernel per step: the elected sign, each
        delta's agreement with it, the weighted agreeing deltas summed and divided by how many
        agree."""
        size = deltas[0].numel()
        total = torch.add(deltas[0], deltas[1], out=out) if len(deltas) > 1 else out.copy_(deltas[0])
        for delta in deltas[2:]:
            total.add_(delta)
        sign = torch.ge(total, 0, out=work.sign[:size]).mul_(2).sub_(1)
        agreements = work.agreements(len(deltas))
        for delta, weight, agree in zip(deltas, self.weights, agreements):
            torch.gt(torch.mul(delta, sign, out=work.values[:size]), 0, out=agree[:size])
            if weight != 1.0:  # x·1.0 is x: the product peft computes, without its kernel
                delta.mul_(weight)
            delta.mul_(agree[:size])
        count = work.count[:size]
        if len(deltas) > 1:
            torch.add(deltas[0], deltas[1], out=out)
            torch.add(agreements[0][:size], agreements[1][:size], out=count)
        else:
            out.copy_(deltas[0])
            count.copy_(agreements[0][:size])
        for delta, agree in zip(deltas[2:], agreements[2:]):
            out.add_(delta)
            count.add_(agree[:size])
        out.div_(count.clamp_(min=1))


def merge(method: str, deltas: list[torch.Tensor], weights: list[float], *, density: float | None = None,
          generator: torch.Generator | None = None, block: int | None = None) -> torch.Tensor:
    """Combine whole float32 `deltas` of one tensor (one per vector) into one delta: the
    `TensorMerge` arithmetic over blocks of `block` entries (default: one block).

    `weights` are the per-vector scales. `sum` is the weighted sum in peft's form; the
    graft driver keeps its own left-to-right accumulation for `sum` (the seeds' order).
    """
    flat_deltas = [d.reshape(-1) for d in deltas]
    numel = flat_deltas[0].numel()
    step = max(1, block or numel)
    ranges = [(s, min(s + step, numel)) for s in range(0, numel, step)] or [(0, 0)]
    merging = TensorMerge(method, [lambda s, e, d=d: (d[s:e], None, 1.0) for d in flat_deltas], weights, ranges,
                          density=density, generator=generator)
    out = torch.empty(numel, dtype=torch.float32)
    for start, stop in ranges:
        out[start:stop] = merging.block(start, stop)
    return out.view(deltas[0].shape)
