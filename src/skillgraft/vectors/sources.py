"""What `graft` adds to the target: saved vectors and (base, skilled) pairs, read a block of rows at a time."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from skillgraft.checkpoint import Checkpoint
from skillgraft.errors import UserError
from skillgraft.vectors import arithmetic
from skillgraft.vectors.files import read_vector_manifest
from skillgraft.vectors.schedule import Schedule
from skillgraft.vectors.streaming import blocks
from skillgraft.vectors.vocab import RowAlignment


@dataclass
class DeltaSource:
    """One skill to add: a saved vector, or a (base, skilled) pair read on the fly."""

    scale: float
    vector: Checkpoint | None = None
    base: Checkpoint | None = None
    skilled: Checkpoint | None = None
    label: str = ""
    schedule: Schedule | None = None  # this vector's own schedule, on top of the graft's
    alignment: RowAlignment | None = None  # embedding rows matched by token (--with-embeddings)

    @property
    def reference(self) -> Checkpoint:
        """The checkpoint whose names/shapes/tokenizer the delta carries."""
        return self.vector if self.vector is not None else self.skilled

    def skip_reason(self, name: str, shape: tuple[int, ...]) -> str | None:
        if self.alignment is not None and name in self.alignment.shapes:
            shape = None  # rows are matched by token: only the row width must agree
        if self.vector is not None:
            info = self.vector.tensors.get(name)
            if info is None:
                return "not in vector"
            if shape is None and info.shape[1:] != self.alignment.shapes[name][1:]:
                return f"vector row width {list(info.shape[1:])} differs from target's"
            if shape is not None and info.shape != shape:
                return f"vector shape {list(info.shape)} differs from target {list(shape)}"
            return None if info.is_float else f"vector dtype {info.dtype} is not floating point"
        for side, checkpoint in (("base", self.base), ("skilled", self.skilled)):
            info = checkpoint.tensors.get(name)
            if info is None:
                return f"not in {side}"
            if shape is None and info.shape[1:] != self.alignment.shapes[name][1:]:
                return f"{side} row width {list(info.shape[1:])} differs from target's"
            if shape is not None and info.shape != shape:
                return f"{side} shape {list(info.shape)} differs from target {list(shape)}"
            if not info.is_float:
                return f"{side} dtype {info.dtype} is not floating point"
        return None

    def part(self, name: str, scale: float, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """Entries [start, stop) of this source's delta for `name`, as a part for
        `arithmetic.combine_blockwise`: the stored tensors' entries, or, for rows matched by
        token, the delta's rows in the target's order."""
        if self.alignment is not None and name in self.alignment.shapes:
            return self.alignment.delta_rows(self, name, start, stop), None, scale
        if self.vector is not None:
            return self.vector.read_entries(name, start, stop), None, scale
        return self.base.read_entries(name, start, stop), self.skilled.read_entries(name, start, stop), scale

    def read_delta(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """The unscaled float32 delta of one whole tensor of the target's `shape` (merge methods
        need whole-tensor statistics), read block by block into one buffer: memory for the
        delta and one block of the inputs."""
        delta = torch.empty(math.prod(shape), dtype=torch.float32)
        for start, stop in blocks(shape):
            block, _ = arithmetic.combine_blockwise([self.part(name, 1.0, start, stop)], torch.float32)
            delta[start:stop] = block
        return delta.view(shape)

    def scale_for(self, name: str, schedule: Schedule | None = None) -> float:
        """This source's scale for one tensor: its scale × the graft's and its own schedule."""
        scale = self.scale
        for rules in (schedule, self.schedule):
            if rules is not None and not rules.empty:
                scale = scale * rules.factor(name)
        return scale


def open_sources(vectors, deltas, allow_pickle: bool) -> list[DeltaSource]:
    sources = []
    for path, scale in vectors:
        checkpoint = Checkpoint(path, allow_pickle=allow_pickle, role="vector")
        read_vector_manifest(checkpoint.path)  # warns (via error) when it is not a vector folder
        sources.append(DeltaSource(float(scale), vector=checkpoint, label=f"{path}:{scale:g}"))
    for base_path, skilled_path, scale in deltas:
        sources.append(DeltaSource(float(scale), base=Checkpoint(base_path, allow_pickle=allow_pickle, role="base"),
                                   skilled=Checkpoint(skilled_path, allow_pickle=allow_pickle, role="skilled"),
                                   label=f"{base_path} -> {skilled_path}:{scale:g}"))
    if not sources:
        raise UserError("nothing to graft: give at least one VECTOR[:SCALE] or --delta BASE SKILLED[:SCALE]")
    return sources
