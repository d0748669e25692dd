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

peft draws DARE's masks from torch's global generator, every vector's after the one before;
here each vector of each tensor gets its own generator, seeded from (seed, tensor name,
vector's position) by a stable hash (`dare_generators`), so a graft is reproducible whatever
the shard layout, the processing order or the threads, and no vector waits for the draws of
the ones before it (positioning a second generator where peft's single one would be cost as
many draws again as the masks themselves). The first vector's generator is seeded as before
(a one-vector DARE graft is unchanged). Drawing from a generator seeded with `seed` gives the
same masks as `torch.manual_seed(seed)`, which is how the tests feed peft the same masks:
peft's functions, with each vector's `random_pruning` preceded by its seed.
"""

from __future__ import annotations

import hashlib

import torch

from skillgraft.vectors.chunked import Part, Reader, Workspace, chunk_slices, flat, in_parallel
from skillgraft.vectors.methods import REGISTRY
from skillgraft.vectors.topk import TopK


def tensor_seed(seed: int, name: str, vector: int = 0) -> int:
    """A 63-bit seed from the user's seed, the tensor name and the vector's position among the
    merged ones (stable across runs/platforms; the first vector's is the tensor's own)."""
    key = f"skillgraft:{int(seed)}:{name}" + (f":vector{vector}" if vector else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def dare_generators(seed: int, name: str, count: int) -> list[torch.Generator]:
    """The CPU generators the `count` vectors' DARE masks of tensor `name` are drawn from."""
    return [torch.Generator().manual_seed(tensor_seed(seed, name, vector)) for vector in range(count)]


class TensorMerge:
    """One tensor's merge of several deltas, computed a block at a time, whatever its size.

    `readers` give each delta's entries (unscaled), `ranges` the blocks that cover the tensor
    (the order the caller will ask for them), `row` the entries per row (every read covers
    whole rows). Magnitude trimming first reads each delta once or twice to find its exact
    top-k threshold (`TopK`); DARE draws each delta's mask from its own generator
    (`generators`, one per delta: `dare_generators`). Then `block(start, stop)`, asked for
    in order, reads the deltas' entries and applies the method a cache-sized chunk at a
    time: every step after the selection is elementwise, so the blocks hold the bits of
    peft's whole-tensor arithmetic, step for step:

    - trim / DARE: d·mask (DARE then ÷ density; the draws are peft's
      `torch.bernoulli(full_like(d, density))`, which on CPU keeps an entry when one uniform
      drawn for it is below p: `rand < density` from the same generator state; uniforms
      drawn a chunk at a time are those drawn at once);
    - ties' election: +1 where Σ d (unweighted, in order) ≥ 0, else −1;
    - disjoint mean: Σ (w·d)·[d·sign > 0] ÷ max(1, how many agree) (peft's `d.sign() == sign`;
      zeros never agree);
    - otherwise Σ w·d, left to right.
    """

    def __init__(self, method: str, readers: list[Reader], weights: list[float], ranges: list[tuple[int, int]],
                 *, density: float | None = None, generators: list[torch.Generator] | None = None, row: int = 1):
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
            if generators is None or len(generators) != len(readers):
                raise ValueError(f"{method} needs one generator per delta")
            self.drops = generators

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
          generators: list[torch.Generator] | None = None, block: int | None = None) -> torch.Tensor:
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
                          density=density, generators=generators)
    out = torch.empty(numel, dtype=torch.float32)
    for start, stop in ranges:
        out[start:stop] = merging.block(start, stop)
    return out.view(deltas[0].shape)
