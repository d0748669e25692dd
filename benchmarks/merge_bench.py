"""Merge-method arithmetic in memory: nanoseconds per entry of `TensorMerge` (the threshold
search when it is built, then its blocks) on deltas of bf16 tensors, as a graft of bf16
checkpoints computes them, without the graft's reads and writes.

Each delta is SKILLED − BASE of two bf16 tensors whose rows differ in scale (so the top-k
sample sees rows unlike each other), read a block of 4 M entries at a time as the graft reads
them. To compare two versions of the code in one run, run it once per version with
PYTHONPATH pointing at each `src` (alternate them: the machine's speed drifts).

Usage: python benchmarks/merge_bench.py [--entries N] [--repeats R] [--methods sum,ties,dare_ties]
"""

from __future__ import annotations

import argparse
import time

import torch

from skillgraft.vectors.merge_methods import TensorMerge, dare_generators


def deltas(entries: int, row: int = 8192, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(entries, generator=generator).to(torch.bfloat16)
    scale = torch.exp(0.5 * torch.randn(entries // row, generator=generator)).repeat_interleave(row)
    others = [(base.float() + 0.01 * scale * torch.randn(entries, generator=generator)).to(torch.bfloat16)
              for _ in range(2)]
    return base, others


def time_method(method: str, base: torch.Tensor, others: list[torch.Tensor], row: int) -> tuple[float, float]:
    """(seconds to build the merge, seconds for its blocks)."""
    entries, block = base.numel(), 1 << 22
    readers = [lambda s, e, x=x: (base[s:e], x[s:e], 1.0) for x in others]
    ranges = [(s, min(s + block, entries)) for s in range(0, entries, block)]
    options = {} if method == "sum" else {"density": 0.5}
    start = time.perf_counter()
    merging = TensorMerge(method, readers, [1.0, 1.0], ranges, generators=dare_generators(1, "bench", len(others)),
                          row=row, **options)
    built = time.perf_counter()
    for first, last in ranges:
        merging.block(first, last)
    return built - start, time.perf_counter() - built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1 << 26)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="sum,ties,dare_ties")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the merge runs its own threads (one per delta, two for the combination)
    row = 8192
    base, others = deltas(args.entries, row)
    print(f"| method | build ns/entry | blocks ns/entry | total ns/entry |  ({args.entries} entries, best of {args.repeats})")
    print("|---|---:|---:|---:|")
    for method in args.methods.split(","):
        best = min((time_method(method, base, others, row) for _ in range(args.repeats)), key=sum)
        per = [seconds / args.entries * 1e9 for seconds in best]
        print(f"| {method} | {per[0]:.2f} | {per[1]:.2f} | {sum(per):.2f} |")


if __name__ == "__main__":
    main()
