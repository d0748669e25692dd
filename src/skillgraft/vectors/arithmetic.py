"""Pure tensor arithmetic of task vectors, all in float32.

These are the formulas the streaming pipeline maps over checkpoints, one block of rows at
a time, kept free of I/O so tests can check them against plain reference code. Order of
operations is fixed (and documented) so results are reproducible bit for bit:

    delta  = skilled.float() - base.float()
    graft  = cast(target.float() + s1*v1 + s2*v2 + ..., target.dtype)   (left to right)

Every operation is elementwise, so a block of a tensor gives the same bits as the whole.
In-place forms are used where they give the same bits (a bf16 operand is widened to
float32 element by element inside the kernel), to save a full-size temporary per step.
`delta` and `scaled` may reuse the memory of float32 inputs they are handed; callers only
hand them tensors they own.
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


def nonfinite_count(tensor: torch.Tensor) -> int:
    """How many NaN/Inf entries a float tensor holds (0 for a healthy tensor)."""
    return int(tensor.numel() - torch.isfinite(tensor).sum().item())


CHUNK = 1 << 18  # elements per chunk: a float32 chunk (1 MiB) stays in the core's cache


def all_finite(tensor: torch.Tensor) -> bool:
    """True when no entry is NaN or ±Inf. One reduction pass: a sum is finite whenever every
    entry is (barring overflow of huge finite values, which the exact check then settles)."""
    if math.isfinite(float(tensor.sum())):
        return True
    return bool(torch.isfinite(tensor).all())


def _owned_float(tensor: torch.Tensor, chunk: slice) -> torch.Tensor:
    """tensor[chunk] widened to float32 in fresh memory (never a view of the caller's)."""
    piece = tensor[chunk]
    return piece.clone() if piece.dtype == torch.float32 else piece.float()


def term(first: torch.Tensor, second: torch.Tensor | None, scale: float, chunk: slice,
         out: torch.Tensor | None = None) -> torch.Tensor:
    """scale·first, or scale·(second − first), on one chunk of 1-D tensors, in float32: in
    `out` when given (a preallocated buffer: the merge methods' workspace), else in fresh memory."""
    source = first if second is None else second
    value = _owned_float(source, chunk) if out is None else out.copy_(source[chunk])
    if second is not None:
        value.sub_(first[chunk])
    return value if scale == 1.0 else value.mul_(scale)


def combine_blockwise(parts: list[tuple[torch.Tensor, torch.Tensor | None, float]],
                      out_dtype: torch.dtype) -> tuple[torch.Tensor, bool]:
    """cast(Σ parts, out_dtype), summed left to right in float32; returns (1-D result, all
    finite after the cast, so fp16 overflow counts too).

    Each part is `(tensor, None, scale)` for scale·tensor or `(base, skilled, scale)` for
    scale·(skilled − base), the delta computed on the fly; the sum starts from the first
    part, so a graft passes `(target, None, 1.0)` first and an extract `[(base, skilled, 1.0)]`.
    These are the float32 operations of `delta` and `scaled` in the order given, so the bits
    equal whole-tensor arithmetic, but on cache-sized chunks: full-size float32 temporaries
    would multiply memory traffic several times over (and peak memory with it). Inputs are
    never modified.
    """
    flat = [(first.reshape(-1), None if second is None else second.reshape(-1), scale)
            for first, second, scale in parts]
    result = torch.empty(flat[0][0].numel(), dtype=out_dtype)
    finite = True
    for start in range(0, result.numel(), CHUNK):
        chunk = slice(start, start + CHUNK)
        total = term(*flat[0], chunk)
        for part in flat[1:]:
            total.add_(term(*part, chunk))
        out_chunk = result[chunk]
        out_chunk.copy_(total)  # the cast result, checked below (so fp16 overflow counts)
        finite = finite and all_finite(out_chunk)
    return result, finite
