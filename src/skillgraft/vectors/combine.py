"""`skillgraft vector combine/scale/negate`: new vectors as weighted sums of saved ones, streamed.

    C = Σ scale_i · V_i        (float32, left to right, stored as --dtype)

computed a block of rows at a time through the streaming pipeline, so combining vectors of
any size needs memory for a few blocks only. A tensor missing from some vectors counts as
zero there (a vector extracted with --include holds a subset); shapes must agree wherever
a tensor appears.
"""

from __future__ import annotations

from pathlib import Path

from skillgraft.checkpoint import (
    AtomicFolder, Card, Checkpoint, DEFAULT_SHARD_SIZE, PlannedTensor, ShardedWriter, check_output, write_manifest,
)
from skillgraft.checkpoint.manifest import input_record
from skillgraft.checkpoint.safetensors_file import CODE_OF_DTYPE
from skillgraft.errors import UserError
from skillgraft.vectors.driver import check_same_architecture
from skillgraft.checkpoint.kinds import require_vector
from skillgraft.vectors.files import copy_side_files
from skillgraft.vectors.progress import Progress
from skillgraft.vectors.sources import float_reason
from skillgraft.vectors.streaming import computed_blocks, stream_tensors


def open_vectors(specs, allow_pickle: bool = False, assume_vector: bool = False) -> list[tuple[Checkpoint, float]]:
    """(path, scale) pairs -> opened vector checkpoints; refuses model and adapter folders."""
    opened = []
    for path, scale in specs:
        checkpoint = Checkpoint(path, allow_pickle=allow_pickle, role="vector")
        require_vector(checkpoint, assume_vector=assume_vector)
        opened.append((checkpoint, float(scale)))
    if not opened:
        raise UserError("nothing to combine: give at least one VECTOR:SCALE")
    return opened


def combine_vectors(specs, out_dir, *, dtype: str = "float32", operation: str = "combine", force: bool = False,
                    quiet: bool = True, allow_nonfinite: bool = False, allow_pickle: bool = False,
                    allow_arch_mismatch: bool = False, shard_size: int = DEFAULT_SHARD_SIZE,
                    assume_vector: bool = False) -> dict:
    """Write Σ scale·vector to `out_dir` as a vector folder (with skillgraft.json)."""
    if dtype not in CODE_OF_DTYPE:
        raise UserError(f"--dtype {dtype!r} is not one of float32, bfloat16, float16")
    vectors = open_vectors(specs, allow_pickle, assume_vector)
    first = vectors[0][0]
    for checkpoint, _ in vectors[1:]:
        check_same_architecture(first, checkpoint, allow_arch_mismatch)
    out = Path(out_dir)
    check_output(out, [c.path for c, _ in vectors], force=force)
    code = CODE_OF_DTYPE[dtype]

    shapes, members, skipped = {}, {}, []
    for index, (checkpoint, _) in enumerate(vectors):
        for name in checkpoint.names:
            info = checkpoint.tensors[name]
            if not info.is_float:
                skipped.append({"tensor": name, "source": index, "reason": float_reason(info.dtype)})
                continue
            if name in shapes and shapes[name] != info.shape:
                raise UserError(f"tensor {name!r} has shape {list(info.shape)} in {checkpoint.path} but "
                                f"{list(shapes[name])} in an earlier vector; these vectors do not belong together")
            shapes.setdefault(name, info.shape)
            members.setdefault(name, []).append(index)
    plan = [PlannedTensor(name, code, shapes[name]) for name in shapes]
    if not plan:
        raise UserError(f"vector {operation} would touch no tensor: the vectors hold no floating-point tensors; "
                        "nothing was written")

    progress = Progress(f"vector {operation}", total_bytes=sum(p.nbytes for p in plan), total_tensors=len(plan),
                        quiet=quiet)
    with AtomicFolder(out, force=force) as temp, progress:
        def produce(planned: PlannedTensor):
            def parts(start: int, stop: int) -> list:
                return [(vectors[i][0].read_entries(planned.name, start, stop), None, vectors[i][1])
                        for i in members[planned.name]]
            return computed_blocks(planned, parts, allow_nonfinite, out)

        writer = ShardedWriter(temp, plan, shard_size, metadata={"skillgraft_kind": "vector"})
        sizes = {planned.name: planned.nbytes for planned in plan}
        hashes = stream_tensors(plan, produce, writer, progress, sizes.__getitem__)
        copy_side_files(first.path, temp)
        manifest = write_manifest(
            temp, kind="vector",
            inputs=[{**input_record("vector", c), "scale": s} for c, s in vectors],
            options={"operation": operation, "dtype": dtype, "shard_size": shard_size,
                     "allow_nonfinite": allow_nonfinite, "allow_arch_mismatch": allow_arch_mismatch},
            file_sha256=hashes,
            extra={"tensors": {"written": len(plan), "partial": sum(len(m) < len(vectors) for m in members.values()),
                               "skipped": len(skipped)}, "skipped": skipped},
            card=Card(title=f"Vector ({operation})", tags=["task-vector"],
                      summary="A weighted sum of saved vectors, computed in float32 left to right: "
                              + " + ".join(f"{s:g}·`{c.source}`" for c, s in vectors) + "."),
        )
    return {"output": str(out), **manifest}
