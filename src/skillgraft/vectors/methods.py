"""The merge methods `graft --method` offers, each declared once with what it does and the
parameters it takes (mergekit's pattern). The CLI's choices and help, the recipe's field, the
option checks and the arithmetic (`merge_methods.TensorMerge`) all read this table, so a
method is added here and nowhere else but its arithmetic. No torch here: `-h` stays fast."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MergeMethod:
    name: str
    formula: str  # per tensor, for deltas d_i with scales w_i (docs/vectors.md's table)
    trims: bool = False  # keeps each delta's int(density·n) largest magnitudes
    drops: bool = False  # DARE: keeps each entry with probability density, rescaled by 1/density
    elects: bool = False  # elects a sign per entry, then the mean of the deltas that agree with it

    @property
    def takes_density(self) -> bool:
        return self.trims or self.drops


REGISTRY = {method.name: method for method in (
    MergeMethod("sum", "target + w_1·d_1 + w_2·d_2 + … in float32, left to right (the seeds' loop, bit for bit)"),
    MergeMethod("magnitude", "keep the int(density·n) largest |d_i| of each delta, then Σ w_i·d_i", trims=True),
    MergeMethod("ties", "magnitude trim; elect per entry the sign of Σ d_i (unweighted; ties go to +); average "
                        "w_i·d_i over the deltas that agree (divided by how many agree)", trims=True, elects=True),
    MergeMethod("dare", "keep each entry with probability density, divide the kept ones by density, then Σ w_i·d_i",
                drops=True),
    MergeMethod("dare_ties", "DARE's random drop, then ties' election and disjoint mean", drops=True, elects=True),
)}
METHODS = tuple(REGISTRY)
WITH_DENSITY = tuple(name for name, method in REGISTRY.items() if method.takes_density)


def density_problem(density: float | None) -> str | None:
    """Why a density cannot be used (None when it can): the kept fraction lies in (0, 1].
    One wording for `graft --density`, recipes and sweeps."""
    if density is not None and not 0 < density <= 1:
        return f"{density:g} is outside (0, 1]: it is the fraction of entries kept"
    return None
