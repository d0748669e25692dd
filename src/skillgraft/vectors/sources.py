"""What `graft` adds to the target: saved vectors and (base, skilled) pairs, read a block of rows at a time."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skillgraft.checkpoint import Checkpoint
from skillgraft.checkpoint.kinds import require_model, require_vector
from skillgraft.errors import UserError
from skillgraft.vectors.rules import embedding_tensors, head_is_tied
from skillgraft.vectors.schedule import Schedule
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
    aliases: dict[str, str] | None = None  # target tensor -> the source tensor that holds its delta

    @property
    def reference(self) -> Checkpoint:
        """The checkpoint whose names/shapes/tokenizer the delta carries."""
        return self.vector if self.vector is not None else self.skilled

    def checkpoints(self) -> list[tuple[str, Checkpoint]]:
        return [(role, c) for role, c in (("vector", self.vector), ("base", self.base), ("skilled", self.skilled))
                if c is not None]

    def source_name(self, name: str) -> str:
        """The tensor of this source holding the delta of the target's `name` (a tied source's
        output head moved with its input embeddings, so its head delta is the embedding's)."""
        return (self.aliases or {}).get(name, name)

    def skip_reason(self, name: str, shape: tuple[int, ...]) -> str | None:
        name = self.source_name(name)
        if self.alignment is not None and name in self.alignment.shapes:
            shape = None  # rows are matched by token: only the row width must agree
        for side, checkpoint in self.checkpoints():
            info = checkpoint.tensors.get(name)
            if info is None:
                return f"not in {side}"
            if shape is None and info.shape[1:] != self.alignment.shapes[name][1:]:
                return f"{side} row width {list(info.shape[1:])} differs from target's"
            if shape is not None and info.shape != shape:
                return f"{side} shape {list(info.shape)} differs from target {list(shape)}"
            if not info.is_float:
                return f"{side} {float_reason(info.dtype)}"
        return None

    def part(self, name: str, scale: float, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """Entries [start, stop) of this source's delta for the target's `name`, as a part for
        `arithmetic.combine_blockwise`: the stored tensors' entries, or, for rows matched by
        token, their rows moved to the target's order (`RowAlignment.part`)."""
        name = self.source_name(name)
        if self.alignment is not None and name in self.alignment.shapes:
            return self.alignment.part(self, name, scale, start, stop)
        if self.vector is not None:
            return self.vector.read_entries(name, start, stop), None, scale
        return self.base.read_entries(name, start, stop), self.skilled.read_entries(name, start, stop), scale

    def delta_reader(self, name: str):
        """`read(start, stop)`: entries [start, stop) of the unscaled delta for the target's
        `name`, as a part (what a merge method reads, a block at a time)."""
        return lambda start, stop: self.part(name, 1.0, start, stop)

    def scale_for(self, name: str, schedule: Schedule | None = None) -> float:
        """This source's scale for one tensor: its scale × the graft's and its own schedule."""
        scale = self.scale
        for rules in (schedule, self.schedule):
            if rules is not None and not rules.empty:
                scale = scale * rules.factor(name)
        return scale


def float_reason(dtype: str) -> str:
    """Why a tensor of `dtype` is not grafted (copied unchanged)."""
    if dtype.startswith(("F8", "F6", "F4")):
        return f"dtype {dtype} is a quantised float format (dequantise the checkpoint first)"
    return f"dtype {dtype} is not floating point"


def open_sources(specs, *, allow_pickle: bool = False, assume_vector: bool = False,
                 assume_model: bool = False) -> list[DeltaSource]:
    """`(vector, scale)` and `(base, skilled, scale)` specs, in the order given (the order of
    the float32 sum), opened and checked: vectors must be vectors, pairs must be models."""
    sources = []
    for spec in specs:
        *paths, scale = spec
        if len(paths) == 1:
            vector = Checkpoint(paths[0], allow_pickle=allow_pickle, role="vector")
            require_vector(vector, assume_vector=assume_vector)
            sources.append(DeltaSource(float(scale), vector=vector, label=f"{paths[0]}:{float(scale):g}"))
        else:
            base = Checkpoint(paths[0], allow_pickle=allow_pickle, role="--delta base")
            skilled = Checkpoint(paths[1], allow_pickle=allow_pickle, role="--delta skilled")
            require_model(base, "--delta base", assume_model)
            require_model(skilled, "--delta skilled", assume_model)
            sources.append(DeltaSource(float(scale), base=base, skilled=skilled,
                                       label=f"{paths[0]} -> {paths[1]}:{float(scale):g}"))
    if not sources:
        raise UserError("nothing to graft: give at least one VECTOR[:SCALE] or --delta BASE SKILLED[:SCALE]")
    return sources


def tie_aliases(source: DeltaSource, target: Checkpoint) -> dict[str, str]:
    """For a source whose head is tied to its embeddings and an untied target: the target's
    head takes the embedding delta (in the source both moved together)."""
    reference = source.base if source.base is not None else source.reference
    if not head_is_tied(reference) or head_is_tied(target):
        return {}
    mine, theirs = embedding_tensors(target), embedding_tensors(source.reference)
    if "output_head" in mine and "input_embeddings" in theirs and "output_head" not in theirs:
        return {mine["output_head"]: theirs["input_embeddings"]}
    return {}
