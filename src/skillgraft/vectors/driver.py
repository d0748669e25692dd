"""extract and graft over checkpoint folders, one block of rows at a time.

Memory stays bounded by a few blocks, whatever the model or tensor size (see
`streaming`): each block of an output tensor is computed from positioned reads of the
inputs' rows, written to its shard, and dropped. The inputs may shard their tensors
differently; lookups are by name.
"""

from __future__ import annotations

from pathlib import Path

from skillgraft.checkpoint import (
    AtomicFolder, Checkpoint, DEFAULT_SHARD_SIZE, PlannedTensor, ShardedWriter, check_output, write_manifest,
)
from skillgraft.checkpoint.manifest import input_record
from skillgraft.checkpoint.safetensors_file import CODE_OF_DTYPE
from skillgraft.errors import UserError
from skillgraft.vectors.files import copy_side_files
from skillgraft.vectors.merge_methods import METHODS, RANDOM_METHODS, generator_for, merge
from skillgraft.vectors.progress import Progress
from skillgraft.vectors.rules import TensorFilter, embedding_role
from skillgraft.vectors.schedule import Schedule, layer_index
from skillgraft.vectors.sources import open_sources
from skillgraft.vectors.streaming import computed_blocks, copied_blocks, stream_tensors
from skillgraft.vectors.vocab import align, chat_rows


def check_same_architecture(reference: Checkpoint, other: Checkpoint, allow: bool) -> None:
    """Refuse mixing models of different families or depths unless asked to."""
    if allow:
        return
    for what, ours, theirs in (("model_type", reference.model_type, other.model_type),
                               ("layer count", reference.num_layers, other.num_layers)):
        if ours is not None and theirs is not None and ours != theirs:
            raise UserError(f"{what} differs: {other.role} {other.path} has {theirs!r}, {reference.role} "
                            f"{reference.path} has {ours!r} (pass --allow-arch-mismatch to go on)")


def extract(base_dir, skilled_dir, out_dir, *, include=(), exclude=(), dtype: str = "float32",
            force: bool = False, quiet: bool = True, allow_arch_mismatch: bool = False,
            allow_nonfinite: bool = False, allow_pickle: bool = False,
            shard_size: int = DEFAULT_SHARD_SIZE) -> dict:
    """Write the vector `skilled − base` (computed in float32, stored as `dtype`) to `out_dir`."""
    from skillgraft.tokenizer import compare_tokenizers

    if dtype not in CODE_OF_DTYPE:
        raise UserError(f"--dtype {dtype!r} is not one of float32, bfloat16, float16")
    base = Checkpoint(base_dir, allow_pickle=allow_pickle, role="base")
    skilled = Checkpoint(skilled_dir, allow_pickle=allow_pickle, role="skilled")
    check_same_architecture(base, skilled, allow_arch_mismatch)
    out = Path(out_dir)
    check_output(out, [base.path, skilled.path], force=force)
    selection = TensorFilter(list(include), list(exclude))
    code = CODE_OF_DTYPE[dtype]

    plan, skipped = [], []
    for name in skilled.names:
        s_info, b_info = skilled.tensors[name], base.tensors.get(name)
        reason = selection.reason_to_skip(name)
        if reason is None and b_info is None:
            reason = "only in skilled"
        elif reason is None and b_info.shape != s_info.shape:
            reason = f"shape differs: base {list(b_info.shape)}, skilled {list(s_info.shape)}"
        elif reason is None and not (s_info.is_float and b_info.is_float):
            reason = f"not floating point ({b_info.dtype}/{s_info.dtype})"
        if reason:
            skipped.append({"tensor": name, "reason": reason})
        else:
            plan.append(PlannedTensor(name, code, s_info.shape))
    skipped += [{"tensor": n, "reason": "only in base"} for n in base.names if n not in skilled.tensors]

    tokenizers = compare_tokenizers(base.path, skilled.path)
    progress = Progress("extract", total_bytes=sum(skilled.tensors[t.name].nbytes for t in plan),
                        total_tensors=len(plan), quiet=quiet)
    with AtomicFolder(out) as temp, progress:
        def produce(planned: PlannedTensor):
            def parts(start: int, stop: int) -> list:
                return [(base.read_entries(planned.name, start, stop), skilled.read_entries(planned.name, start, stop),
                         1.0)]
            return computed_blocks(planned, parts, allow_nonfinite, out)

        writer = ShardedWriter(temp, plan, shard_size, metadata={"skillgraft_kind": "vector"})
        hashes = stream_tensors(plan, produce, writer, progress, lambda name: skilled.tensors[name].nbytes)
        copy_side_files(skilled.path, temp)
        manifest = write_manifest(
            temp, kind="vector",
            inputs=[input_record("base", base), input_record("skilled", skilled)],
            options={"include": list(include), "exclude": list(exclude), "dtype": dtype,
                     "shard_size": shard_size, "allow_arch_mismatch": allow_arch_mismatch,
                     "allow_nonfinite": allow_nonfinite},
            file_sha256=hashes,
            extra={"tensors": {"written": len(plan), "skipped": len(skipped)}, "skipped": skipped,
                   "tokenizers": tokenizers},
        )
    return {"output": str(out), **manifest}


def check_method(method: str, density: float | None) -> None:
    """Refuse unknown methods and densities that are missing, unused or out of (0, 1]."""
    if method not in METHODS:
        raise UserError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if method == "sum":
        if density is not None:
            raise UserError("--density applies to --method ties, dare, dare_ties or magnitude, not sum")
        return
    if density is None:
        raise UserError(f"--method {method} needs --density (the kept fraction, e.g. 0.5)")
    if not 0 < density <= 1:
        raise UserError(f"--density {density:g} is outside (0, 1]: it is the fraction of entries kept")


def graft(target_dir, out_dir, *, vectors=(), deltas=(), include=(), exclude=(), with_embeddings: bool = False,
          force: bool = False, quiet: bool = True, allow_arch_mismatch: bool = False,
          allow_nonfinite: bool = False, allow_pickle: bool = False, shard_size: int = DEFAULT_SHARD_SIZE,
          chat_template_from=None, method: str = "sum", density: float | None = None, seed: int = 0,
          schedule: Schedule | None = None, source_schedules: list[Schedule | None] | None = None) -> dict:
    """Write `target + merge(scale·vector, ...)` (float32, cast to the target's dtype) to `out_dir`.

    `vectors` holds (vector_dir, scale) pairs; `deltas` holds (base_dir, skilled_dir, scale)
    triples computed on the fly. `method` is sum (left-to-right float32 sum, the seeds'
    loop) or one of ties / dare / dare_ties / magnitude with `density` the kept fraction and
    `seed` DARE's seed (see `merge_methods`). `schedule` scales each tensor by layer, module
    kind and depth; `source_schedules` (one per vector, then per delta) adds a vector's own.
    The target's input embeddings and output head are left untouched unless `with_embeddings`;
    then, when the vocabularies differ, their rows are matched by token string (see
    `skillgraft.vectors.vocab`).
    """
    from skillgraft.tokenizer import apply_chat_template, compare_tokenizers, plan_chat_template

    check_method(method, density)
    target = Checkpoint(target_dir, allow_pickle=allow_pickle, role="target")
    sources = open_sources(vectors, deltas, allow_pickle)
    for source, own in zip(sources, source_schedules or []):
        source.schedule = own
    for rules in [schedule, *(source.schedule for source in sources)]:
        if rules is not None and rules.num_layers is None:
            rules.num_layers = target.num_layers or 1 + max(
                (i for n in target.names if (i := layer_index(n)) is not None), default=0)
    inputs_seen = [target.path]
    for source in sources:
        for checkpoint in (source.vector, source.base, source.skilled):
            if checkpoint is not None:
                check_same_architecture(target, checkpoint, allow_arch_mismatch)
                inputs_seen.append(checkpoint.path)
    out = Path(out_dir)
    check_output(out, inputs_seen + ([Path(chat_template_from)] if chat_template_from else []), force=force)
    tokenizer_reports = [compare_tokenizers(source.reference.path, target.path) for source in sources]
    if with_embeddings:
        for source, report in zip(sources, tokenizer_reports):
            if report["relation"] in ("identical", "unknown"):
                continue
            source.alignment = align(source.reference.path, target.path,
                                     source.base.path if source.base is not None else None,
                                     source.skilled.path if source.skilled is not None else None)
    selection = TensorFilter(list(include), list(exclude))
    template_plan = plan_chat_template(Path(chat_template_from), target.path) if chat_template_from else None

    plan, work, skipped = [], {}, []
    for name in target.names:
        info = target.tensors[name]
        plan.append(PlannedTensor(name, info.dtype, info.shape))
        reason = role = None
        if not info.is_float:
            reason = f"target dtype {info.dtype} is not floating point (copied unchanged)"
        elif (role := embedding_role(name, info.shape, target.vocab_size)) and not with_embeddings:
            reason = f"{role} of the target (kept; pass --with-embeddings to graft it)"
        else:
            reason = selection.reason_to_skip(name)
        for source in sources:
            if role and not reason and source.alignment is not None:
                source.alignment.shapes[name] = info.shape
        if reason:
            skipped.append({"tensor": name, "reason": reason})
            continue
        active = []
        for index, source in enumerate(sources):
            why = source.skip_reason(name, info.shape)
            if why:
                skipped.append({"tensor": name, "source": index, "reason": why})
            else:
                active.append(source)
        if active:
            work[name] = active
    for index, source in enumerate(sources):
        skipped += [{"tensor": n, "source": index, "reason": "not in target"}
                    for n in source.reference.names if n not in target.tensors]

    factors = {name: [source.scale_for(name, schedule) for source in active] for name, active in work.items()}
    special_rows: dict[str, str] = {}
    progress = Progress("graft", total_bytes=target.total_bytes, total_tensors=len(plan), quiet=quiet)
    with AtomicFolder(out) as temp, progress:
        def produce(planned: PlannedTensor):
            name = planned.name
            if name not in work:
                return copied_blocks(target, name)
            pairs = list(zip(work[name], factors[name]))
            if method == "sum":
                def parts(start: int, stop: int) -> list:
                    return [(target.read_entries(name, start, stop), None, 1.0),
                            *(source.part(name, factor, start, stop) for source, factor in pairs)]
            else:  # target + merged == merged + target bit for bit
                generator = generator_for(seed, name) if method in RANDOM_METHODS else None
                merged = merge(method, [s.read_delta(name, planned.shape) for s in work[name]], factors[name],
                               density=density, generator=generator).view(-1)

                def parts(start: int, stop: int) -> list:
                    return [(target.read_entries(name, start, stop), None, 1.0), (merged[start:stop], None, 1.0)]
            patches = []
            for source, factor in pairs:
                if source.alignment is not None and source.alignment.special and name in source.alignment.shapes:
                    patches.append(chat_rows(target, source.skilled, name, factor, source.alignment.special))
                    special_rows.update({f"{name}: {token}": source.label for token in patches[-1].rows})
            return computed_blocks(planned, parts, allow_nonfinite, out, patches)

        writer = ShardedWriter(temp, plan, shard_size, metadata={"skillgraft_kind": "model"})
        hashes = stream_tensors(plan, produce, writer, progress, lambda name: target.tensors[name].nbytes)
        copy_side_files(target.path, temp)
        template_report = apply_chat_template(template_plan, temp) if template_plan else None
        manifest = write_manifest(
            temp, kind="model",
            inputs=[input_record("target", target)] + [
                {**input_record(role, checkpoint), "source": index, "scale": source.scale}
                for index, source in enumerate(sources)
                for role, checkpoint in (("vector", source.vector), ("base", source.base), ("skilled", source.skilled))
                if checkpoint is not None],
            options={"include": list(include), "exclude": list(exclude), "with_embeddings": with_embeddings,
                     "method": method, "density": density, "seed": seed,
                     "schedule": schedule.describe() if schedule is not None and not schedule.empty else None,
                     "shard_size": shard_size, "allow_arch_mismatch": allow_arch_mismatch,
                     "allow_nonfinite": allow_nonfinite,
                     "chat_template_from": str(Path(chat_template_from).resolve()) if chat_template_from else None},
            file_sha256=hashes,
            extra={"tensors": {"total": len(plan), "grafted": len(work), "copied": len(plan) - len(work)},
                   "scales": {name: f for name, f in factors.items()
                              if any(x != s.scale for x, s in zip(f, work[name]))},
                   "skipped": skipped, "tokenizers": tokenizer_reports, "chat_template": template_report,
                   "vocab_alignment": [None if s.alignment is None else
                                       {**s.alignment.report(), "special_copied": sorted(
                                           k for k, v in special_rows.items() if v == s.label)}
                                       for s in sources]},
        )
    return {"output": str(out), **manifest}
