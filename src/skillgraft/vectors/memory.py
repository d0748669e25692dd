"""A graft applied to a model already loaded in memory (sweep trials on a warm target).

The result is the one `skillgraft graft` writes, bit for bit: the blocks come from the graft
core's own `grafted_blocks`, and only where they go differs (a loaded parameter instead of a
shard).
"""

from __future__ import annotations

import torch

from skillgraft.errors import UserError
from skillgraft.vectors.driver import GraftPlan, grafted_blocks


def graft_in_memory(plan: GraftPlan, state: dict, restore: set[str] = frozenset(),
                    allow_nonfinite: bool = False) -> set[str]:
    """Write the plan's result into `state` (a loaded model's `state_dict()`: its tensors share
    the parameters' memory) instead of a folder: the grafted tensors get `grafted_blocks`' bits,
    cast to the parameter's dtype exactly as `from_pretrained` casts a loaded file; the tensors
    named in `restore` that this plan copies get the target's own values back. Returns the names
    grafted (the next call's `restore`). Nothing is written to disk."""
    grafted = grafted_blocks(plan, allow_nonfinite)
    layout = {planned.name: planned for planned in plan.layout}
    missing = sorted(name for name in set(plan.work) | set(restore) if name in layout and name not in state)
    if missing:
        raise UserError(f"the loaded target has no parameter {missing[0]!r} (of {len(missing)}); graft to a folder")
    with torch.no_grad():
        for name in plan.work:
            flat, offset = state[name].view(-1), 0
            for block in grafted(layout[name]):
                flat[offset:offset + block.numel()].copy_(block)
                offset += block.numel()
        for name in set(restore) - set(plan.work):
            if name in layout:
                state[name].copy_(plan.target.read(name).reshape(state[name].shape))
    return set(plan.work)
