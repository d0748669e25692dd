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
