"""Pure tensor arithmetic of task vectors, all in float32.

These are the formulas the streaming driver maps over checkpoints, kept free of I/O so
tests can check them against plain reference code. Order of operations is fixed (and
documented) so results are reproducible bit for bit:

    delta  = skilled.float() - base.float()
    graft  = cast(target.float() + s1*v1 + s2*v2 + ..., target.dtype)   (left to right)

In-place forms are used where they give the same bits (a bf16 operand is widened to
float32 element by element inside the kernel), to save a full-size temporary per step.
Functions may reuse the memory of float32 inputs they are handed; the driver only hands
them tensors it owns.
"""

from __future__ import annotations

import math

import torch


def delta(base: torch.Tensor, skilled: torch.Tensor) -> torch.Tensor:
    """skilled − base in float32."""
    difference = skilled.float()
    if difference is skilled:
        difference = difference.clone()
    return difference.sub_(base)


def scaled(vector: torch.Tensor, scale: float) -> torch.Tensor:
    """scale·vector in float32; may reuse `vector`'s memory when it is already float32."""
    vector = vector.float()
    return vector if scale == 1.0 else vector.mul_(scale)


def accumulate(target: torch.Tensor, contributions: list[torch.Tensor]) -> torch.Tensor:
    """target + Σ contributions, summed left to right in float32 (not yet cast back)."""
    total = target.float()
    if total is target:
        total = total.clone()
    for contribution in contributions:
        total.add_(contribution)
    return total


def all_finite(tensor: torch.Tensor) -> bool:
    """True when no entry is NaN or ±Inf. One reduction pass: a sum is finite whenever every
    entry is (barring overflow of huge finite values, which the exact check then settles)."""
    if math.isfinite(float(tensor.sum())):
        return True
    return bool(torch.isfinite(tensor).all())


def nonfinite_count(tensor: torch.Tensor) -> int:
    """How many NaN/Inf entries a float tensor holds (0 for a healthy tensor)."""
    return int(tensor.numel() - torch.isfinite(tensor).sum().item())


CHUNK = 1 << 18  # elements per block: a float32 block (1 MiB) stays in the core's cache


def _owned_float(tensor: torch.Tensor, block: slice) -> torch.Tensor:
    """tensor[block] widened to float32 in fresh memory (never a view of the caller's)."""
    piece = tensor[block]
    return piece.clone() if piece.dtype == torch.float32 else piece.float()


def combine_blockwise(target: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor | None, float]],
                      out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, bool]:
    """cast(target.float() + Σ scale·delta) block by block; returns (result, all finite).

    Each part is `(vector, None, scale)` or `(base, skilled, scale)` (delta computed on the
    fly). The same float32 operations in the same order as `delta`/`scaled`/`accumulate`,
    so the bits are identical, but on cache-sized blocks: full-size float32 temporaries
    would multiply memory traffic several times over (and peak memory with it).
    """
    flat_target = target.reshape(-1)
    flat_parts = [(a.reshape(-1), None if b is None else b.reshape(-1), s) for a, b, s in parts]
    result = torch.empty(flat_target.shape, dtype=out_dtype or target.dtype)
    finite = True
    for start in range(0, flat_target.numel(), CHUNK):
        block = slice(start, start + CHUNK)
        total = _owned_float(flat_target, block)
        for first, second, scale in flat_parts:
            if second is None:
                piece = first[block].float()
                piece = piece * scale if scale != 1.0 else piece
            else:
                piece = _owned_float(second, block).sub_(first[block])
                if scale != 1.0:
                    piece.mul_(scale)
            total.add_(piece)
        out_block = result[block]
        out_block.copy_(total)  # the cast result, checked below (so fp16 overflow counts)
        finite = finite and all_finite(out_block)
    return result.reshape(target.shape), finite


def delta_blockwise(base: torch.Tensor, skilled: torch.Tensor, out_dtype: torch.dtype) -> tuple[torch.Tensor, bool]:
    """cast(skilled.float() − base.float(), out_dtype) block by block; returns (delta, all finite)."""
    flat_base, flat_skilled = base.reshape(-1), skilled.reshape(-1)
    result = torch.empty(flat_skilled.shape, dtype=out_dtype)
    finite = True
    for start in range(0, flat_skilled.numel(), CHUNK):
        block = slice(start, start + CHUNK)
        out_block = result[block]
        out_block.copy_(_owned_float(flat_skilled, block).sub_(flat_base[block]))
        finite = finite and all_finite(out_block)
    return result.reshape(skilled.shape), finite
