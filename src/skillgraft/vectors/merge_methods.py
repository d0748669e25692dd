"""Merge methods for several task vectors on one tensor: sum, ties, dare, dare_ties, magnitude.

Computed a block of entries at a time (`TensorMerge`), so memory holds a few blocks whatever
the tensor size (a 70B model's embedding is 4.2 GB in float32), and written to give the same
bits as peft's reference implementations (`peft.utils.merge_utils`: `task_arithmetic`,
`ties`, `dare_linear`, `dare_ties`, `magnitude_prune`) on the same inputs; the tests check
that with `torch.equal`. Semantics, as in peft:

- `density` is the kept fraction for every method (DARE drops with p = 1 − density);
  density ≥ 1 keeps every entry (and DARE then does not rescale).
- magnitude trim keeps the `int(density · numel)` largest |entries|, found exactly by two
  counting passes over the blocks (`TopK`). Where several entries share the k-th largest
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
    magnitude is found by counting, not sorting: one pass counts the upper 12 bits of every
    entry, and the lower 19 bits of the entries in the bin where the k-th falls (in the same
    pass when the first block predicted that bin, else in a second). Kept:
    every entry above that threshold, and of the entries equal to it the lowest-numbered ones,
    until k are kept. Memory: the histograms (a few MB), whatever the tensor size.
    """

    threshold: int  # the k-th largest magnitude, as its float32 bits
    ties: int  # entries equal to the threshold still to keep, lowest index first

    @classmethod
    def find(cls, read: Reader, ranges: list[tuple[int, int]], k: int) -> TopK:
        """One delta's top k. The first pass also counts the lower bits of the entries in a few
        bins around where the first block puts the k-th largest; when the tensor's k-th falls
        there too (as it does for deltas alike across their rows), no second pass is read."""
        if k == 0:
            return cls(_KEEP_NONE, 0)
        work = Workspace()
        high = torch.zeros(1 << (31 - _SHIFT), dtype=torch.int64)
        window = None
        for index, (start, stop) in enumerate(ranges):
            part = flat(read(start, stop))
            if index == 0:
                window = _Window.around(part, stop - start, k * (stop - start) / ranges[-1][1], work)
            for bits in _magnitudes(part, stop - start, work):
                high += torch.bincount(torch.bitwise_right_shift(bits, _SHIFT, out=work.key[:bits.numel()]),
                                       minlength=high.numel())
                window.count(bits, work)
        upper, above_upper = _kth_bin(high, k)
        low = window.lower_bits(upper)
        if low is None:  # the k-th largest lies outside the window: count its bin's lower bits
            low = torch.zeros(1 << _SHIFT, dtype=torch.int64)
            for start, stop in ranges:
                for bits in _magnitudes(flat(read(start, stop)), stop - start, work):
                    inside = bits[torch.eq(torch.bitwise_right_shift(bits, _SHIFT, out=work.key[:bits.numel()]),
                                           upper, out=work.mask[:bits.numel()])]
                    low.index_add_(0, inside.bitwise_and_((1 << _SHIFT) - 1), work.ones[:inside.numel()])
        lower, above = _kth_bin(low, k - above_upper)
        return cls((upper << _SHIFT) | lower, k - above_upper - above)

    @classmethod
    def find_all(cls, readers: list[Reader], ranges: list[tuple[int, int]], k: int) -> list[TopK]:
        """Each delta's top k, the deltas on parallel threads (the kernels release the GIL, and
        while a tensor's thresholds are searched the graft's writer has nothing to write)."""
        return in_parallel([lambda read=read: cls.find(read, ranges, k) for read in readers])

    def mask(self, values: torch.Tensor, work: Workspace) -> torch.Tensor:
        """1.0 where the next entries are among the k largest, else 0.0 (call on every entry, in order)."""
        bits = work.magnitude_bits(values)
        keep = torch.gt(bits, self.threshold, out=work.factor[:values.numel()])
        if self.ties:
            tied = (bits == self.threshold).nonzero().view(-1)[:self.ties]
            keep[tied] = 1.0
            self.ties -= tied.numel()
        return keep


def _magnitudes(part: Part, size: int, work: Workspace) -> Iterator[torch.Tensor]:
    """A block's magnitudes as int32 bits, chunk by chunk."""
    for chunk in chunk_slices(size):
        yield work.magnitude_bits(work.load(part, chunk))


class _Window:
    """Lower-bit counts of the entries whose upper bits fall in bins [first, last]."""

    SPAN = 1  # bins each side of the first block's estimate (each bin: an eighth of an octave)

    def __init__(self, first: int, last: int):
        self.low_bits, self.high_bits = first << _SHIFT, (last + 1) << _SHIFT
        self.first, self.last = first, last
        self.counts = torch.zeros((last - first + 1) << _SHIFT, dtype=torch.int64)

    @classmethod
    def around(cls, part: Part, size: int, k: float, work: Workspace) -> _Window:
        """The window around the bin of the first block's k-th largest (k scaled to the block)."""
        high = torch.zeros(1 << (31 - _SHIFT), dtype=torch.int64)
        for bits in _magnitudes(part, size, work):
            high += torch.bincount(torch.bitwise_right_shift(bits, _SHIFT, out=work.key[:bits.numel()]),
                                   minlength=high.numel())
        guess = _kth_bin(high, max(1, min(size, round(k))))[0] if size else 0
        return cls(max(0, guess - cls.SPAN), min(high.numel() - 1, guess + cls.SPAN))

    def count(self, bits: torch.Tensor, work: Workspace) -> None:
        inside = work.mask[:bits.numel()]
        torch.ge(bits, self.low_bits, out=inside).logical_and_(bits < self.high_bits)
        self.counts.index_add_(0, bits[inside].sub_(self.low_bits), work.ones[:int(inside.sum())])

    def lower_bits(self, upper: int) -> torch.Tensor | None:
        """The lower-bit counts of bin `upper`, or None when the window does not hold it."""
        if not self.first <= upper <= self.last:
            return None
        return self.counts[(upper - self.first) << _SHIFT:(upper - self.first + 1) << _SHIFT]


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
    (the order the caller will ask for them). Magnitude trimming first reads the deltas twice
    to find each one's exact top-k threshold (`TopK`); DARE gives each delta a generator
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
                 *, density: float | None = None, generator: torch.Generator | None = None):
        if method not in REGISTRY:
            raise ValueError(f"unknown merge method {method!r}")
        self.kind = REGISTRY[method]
        if self.kind.takes_density and (density is None or not 0 < density <= 1):
            raise ValueError(f"{method} needs a density in (0, 1], got {density!r}")
        numel = ranges[-1][1] if ranges else 0
        self.readers, self.density = readers, density
        self.weights = [float(torch.tensor(w, dtype=torch.float32)) for w in weights]  # peft's float32 weights
        self.work = Workspace()  # the combining step's, on the calling thread
        self.works = [Workspace() for _ in readers]  # each delta's chunk and its selection's buffers
        self.position = 0
        self.trims, self.drops = None, None
        if self.kind.trims and density < 1:
            self.trims = TopK.find_all(readers, ranges, int(density * numel))
        if self.kind.drops and density < 1:
            generator = generator if generator is not None else torch.Generator().manual_seed(0)
            self.drops = in_parallel([lambda i=i: skipped_generator(generator, i * numel) for i in range(len(readers))])

    def block(self, start: int, stop: int) -> torch.Tensor:
        """The merged delta of entries [start, stop) (1-D float32); blocks must come in order."""
        if start != self.position:
            raise ValueError(f"blocks must be merged in order: asked for {start}, next is {self.position}")
        self.position = stop
        parts = in_parallel([lambda read=read: flat(read(start, stop)) for read in self.readers])
        merged = torch.empty(stop - start, dtype=torch.float32)
        for chunk in chunk_slices(stop - start):
            deltas = [self._selected(index, part, chunk) for index, part in enumerate(parts)]
            out = merged[chunk]
            if self.kind.elects:
                self._disjoint_mean(deltas, out)
            else:
                out.copy_(deltas[0]).mul_(self.weights[0])
                for delta, weight in zip(deltas[1:], self.weights[1:]):
                    out.add_(delta.mul_(weight))
        return merged

    def _selected(self, index: int, part: Part, chunk: slice) -> torch.Tensor:
        """Delta `index` on `chunk`, trimmed or dropped as the method says (in its workspace)."""
        work = self.works[index]
        delta = work.load(part, chunk)
        if self.trims is not None:
            delta.mul_(self.trims[index].mask(delta, work))
        if self.drops is not None:
            draws = torch.rand(delta.numel(), generator=self.drops[index], out=work.values[:delta.numel()])
            delta.mul_(torch.lt(draws, self.density, out=work.factor[:delta.numel()])).div_(self.density)
        return delta

    def _disjoint_mean(self, deltas: list[torch.Tensor], out: torch.Tensor) -> None:
        work, size = self.work, deltas[0].numel()
        total = out.copy_(deltas[0])
        for delta in deltas[1:]:
            total.add_(delta)
        sign = torch.ge(total, 0, out=work.sign[:size]).mul_(2).sub_(1)
        count = work.count[:size].zero_()
        for index, (delta, weight) in enumerate(zip(deltas, self.weights)):
            agree = torch.gt(torch.mul(delta, sign, out=work.values[:size]), 0, out=work.factor[:size])
            delta.mul_(weight).mul_(agree)
            count.add_(agree)
            if index == 0:
                out.copy_(delta)
            else:
                out.add_(delta)
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
