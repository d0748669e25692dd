"""Pure tensor arithmetic of task vectors, all in float32.

These are the formulas the streaming driver maps over checkpoints, kept free of I/O so
tests can check them against plain reference code. Order of operations is fixed (and
documented) so results are reproducible bit for bit:

    delta  = skilled.float() - base.float()
    graft  = cast(target.float() + s1*v1 + s2*v2 + ..., target.dtype)   (left to right)
"""

from __future__ import annotations

import torch


def delta(base: torch.Tensor, skilled: torch.Tensor) -> torch.Tensor:
    """skilled − base in float32 (a fresh tensor)."""
    return skilled.float() - base.float()


def scaled(vector: torch.Tensor, scale: float) -> torch.Tensor:
    """scale·vector in float32; may reuse `vector`'s memory when it is already float32."""
    vector = vector.float()
    return vector if scale == 1.0 else vector.mul_(scale)


def accumulate(target: torch.Tensor, contributions: list[torch.Tensor]) -> torch.Tensor:
    """target + Σ contributions, summed left to right in float32 (not yet cast back)."""
    total = target.float().clone() if target.dtype == torch.float32 else target.float()
    for contribution in contributions:
        total.add_(contribution)
    return total


def nonfinite_count(tensor: torch.Tensor) -> int:
    """How many NaN/Inf entries a float tensor holds (0 for a healthy tensor)."""
    return int(tensor.numel() - torch.isfinite(tensor).sum().item())
