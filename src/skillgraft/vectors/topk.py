"""The exact top k magnitudes of a delta too large to hold: `TopK` finds the threshold by
counting over blocks (planned from a sample) and applies it chunk by chunk in order, keeping
the lowest-numbered of the entries tied at the threshold (docs/vectors.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from skillgraft.vectors.chunked import Part, Reader, Workspace, chunk_slices, flat, in_parallel

_SHIFT = 19  # the first pass counts a magnitude's upper 12 bits (4096 bins), the second its lower 19
_KEEP_NONE = (1 << 31) - 1  # a threshold no magnitude's bits exceed (NaN's are at most this)


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
        sample = torch.empty(numel, dtype=torch.int32)
        for start, stop in ranges:
            _bits_into(sample[start:stop], read(start, stop), work)
        return sample
    sample = torch.empty(reads, span, dtype=torch.int32)
    size = rows_per_read * row
    every = torch.arange(span) * size // span  # the entries kept of each read
    read_bits = torch.empty(size, dtype=torch.int32)
    for index in range(reads):
        first = index * (total_rows - rows_per_read) // (reads - 1)
        _bits_into(read_bits, read(first * row, first * row + size), work)
        torch.index_select(read_bits, 0, every, out=sample[index])
    return sample


def _bits_into(out: torch.Tensor, part: Part, work: Workspace) -> None:
    """The magnitude bits of a part's entries, written to `out` (as long as the part)."""
    for chunk, bits in zip(chunk_slices(out.numel()), _magnitudes(flat(part), out.numel(), work)):
        out[chunk] = bits


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
