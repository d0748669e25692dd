"""extract and graft over checkpoint folders, one block of rows at a time.

Memory stays bounded by a few blocks, whatever the model or tensor size (see
`streaming`): each block of an output tensor is computed from positioned reads of the
inputs' rows, written to its shard, and dropped. The inputs may shard their tensors
differently; lookups are by name.

`graft` is a plan (`plan_graft`: what will be grafted, copied, skipped and scaled, and why,
decided from the headers alone; `graft --dry-run` prints it) and its execution
(`execute_graft`: the streaming pass that writes the output).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from skillgraft.checkpoint import (
    AtomicFolder, Checkpoint, DEFAULT_SHARD_SIZE, PlannedTensor, ShardedWriter, check_output, write_manifest,
)
from skillgraft.checkpoint.card import Card
from skillgraft.checkpoint.kinds import require_model
from skillgraft.checkpoint.manifest import input_record
from skillgraft.checkpoint.resolve import resolve_model
from skillgraft.checkpoint.safetensors_file import CODE_OF_DTYPE
from skillgraft.errors import UserError
from skillgraft.vectors.files import copy_side_files
from skillgraft.vectors.merge_methods import TensorMerge, dare_generators
from skillgraft.vectors.methods import METHODS, REGISTRY, WITH_DENSITY, density_problem
from skillgraft.vectors.progress import Progress
from skillgraft.vectors.rules import TensorFilter, embedding_role, embedding_tensors, head_is_tied
from skillgraft.vectors.schedule import Schedule, layer_index
from skillgraft.vectors.sources import DeltaSource, float_reason, open_sources, tie_aliases
from skillgraft.vectors.streaming import blocks, computed_blocks, copied_blocks, stream_tensors
from skillgraft.vectors.vocab import align, chat_rows, extract_alignment


def check_same_architecture(reference: Checkpoint, other: Checkpoint, allow: bool) -> None:
    """Refuse mixing models of different families or depths unless asked to."""
    if allow:
        return
    for what, ours, theirs in (("model_type", reference.model_type, other.model_type),
                               ("layer count", reference.num_layers, other.num_layers)):
        if ours is not None and theirs is not None and ours != theirs:
            raise UserError(f"{what} differs: {other.role} {other.source} has {theirs!r}, {reference.role} "
                            f"{reference.source} has {ours!r} (pass --allow-arch-mismatch to go on)")


def nothing_selected(what: str, checkpoint: Checkpoint, selection: TensorFilter, skipped: list[dict],
                     with_embeddings: bool | None = None) -> UserError:
    """The error for a selection that leaves no tensor, naming the rule that emptied it."""
    chosen = [n for n in checkpoint.names if selection.reason_to_skip(n) is None]
    if not chosen and selection.include and not any(r["reason"].startswith("excluded by") for r in skipped):
        rule = f"--include {' '.join(repr(p) for p in selection.include)} matches no tensor"
    elif not chosen:
        rule = "--include/--exclude leave no tensor" if selection.include else (
            f"--exclude {' '.join(repr(p) for p in selection.exclude)} excludes every tensor")
    elif with_embeddings is False and all(
            embedding_role(n, checkpoint.tensors[n].shape, checkpoint.vocab_size) for n in chosen):
        rule = ("the selected tensors are the input embeddings and output head, which are kept unless "
                "--with-embeddings is given")
    else:
        reasons = [entry["reason"] for entry in skipped if entry["tensor"] in chosen]
        common = max(set(reasons), key=reasons.count) if reasons else "no usable tensors"
        rule = f"every selected tensor is skipped (most often: {common})"
    return UserError(f"{what} would touch no tensor: {rule}; nothing was written ({checkpoint.source} has "
                     f"{len(checkpoint.names)} tensors, e.g. {', '.join(checkpoint.names[:2])})")


def extract(base_dir, skilled_dir, out_dir, *, include=(), exclude=(), dtype: str = "float32",
            force: bool = False, quiet: bool = True, allow_arch_mismatch: bool = False,
            allow_nonfinite: bool = False, allow_pickle: bool = False, assume_model: bool = False,
            shard_size: int = DEFAULT_SHARD_SIZE) -> dict:
    """Write the vector `skilled − base` (computed in float32, stored as `dtype`) to `out_dir`.

    When the two tokenizers number tokens differently, embedding rows are matched by token
    string (a token the base lacks gets a zero delta), as `graft --delta` does.
    """
    from skillgraft.tokenizer import compare_tokenizers

    if dtype not in CODE_OF_DTYPE:
        raise UserError(f"--dtype {dtype!r} is not one of float32, bfloat16, float16")
    base = Checkpoint(base_dir, allow_pickle=allow_pickle, role="base")
    skilled = Checkpoint(skilled_dir, allow_pickle=allow_pickle, role="skilled")
    require_model(base, "base", assume_model)
    require_model(skilled, "skilled", assume_model)
    check_same_architecture(base, skilled, allow_arch_mismatch)
    out = Path(out_dir)
    check_output(out, [base.path, skilled.path], force=force)
    selection = TensorFilter(list(include), list(exclude))
    code = CODE_OF_DTYPE[dtype]
    tokenizers = compare_tokenizers(base.path, skilled.path)
    rows, pair = None, DeltaSource(1.0, base=base, skilled=skilled)
    if tokenizers["relation"] not in ("identical", "unknown") and embedding_tensors(skilled):
        rows = extract_alignment(base.path, skilled.path)
        rows.shapes = {name: skilled.tensors[name].shape for name in embedding_tensors(skilled).values()}

    plan, skipped = [], []
    for name in skilled.names:
        s_info, b_info = skilled.tensors[name], base.tensors.get(name)
        aligned = rows is not None and name in rows.shapes
        reason = selection.reason_to_skip(name)
        if reason is None and b_info is None:
            reason = "only in skilled"
        elif reason is None and b_info.shape != s_info.shape and not aligned:
            reason = f"shape differs: base {list(b_info.shape)}, skilled {list(s_info.shape)}"
        elif reason is None and not (s_info.is_float and b_info.is_float):
            reason = float_reason(s_info.dtype if not s_info.is_float else b_info.dtype)
        if reason:
            skipped.append({"tensor": name, "reason": reason})
        else:
            plan.append(PlannedTensor(name, code, s_info.shape))
    skipped += [{"tensor": n, "reason": "only in base"} for n in base.names if n not in skilled.tensors]
    if not plan:
        raise nothing_selected("extract", skilled, selection, skipped)

    progress = Progress("extract", total_bytes=sum(skilled.tensors[t.name].nbytes for t in plan),
                        total_tensors=len(plan), quiet=quiet)
    with AtomicFolder(out, force=force) as temp, progress:
        def produce(planned: PlannedTensor):
            name = planned.name

            def parts(start: int, stop: int) -> list:
                if rows is not None and name in rows.shapes:
                    return [rows.part(pair, name, 1.0, start, stop)]
                return [(base.read_entries(name, start, stop), skilled.read_entries(name, start, stop), 1.0)]
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
                   "tokenizers": tokenizers, "vocab_alignment": rows.report() if rows is not None else None},
            card=Card(title=f"Vector: {skilled.source} − {base.source}", tags=["task-vector"],
                      summary=f"The weight differences `{skilled.source} − {base.source}`, computed in float32 and "
                              f"stored as {dtype}. Add it to a model with `skillgraft graft MODEL THIS_FOLDER`."),
        )
    return {"output": str(out), **manifest}


def check_method(method: str, density: float | None) -> None:
    """Refuse unknown methods and densities that are missing, unused or out of (0, 1]."""
    if method not in METHODS:
        raise UserError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if not REGISTRY[method].takes_density:
        if density is not None:
            raise UserError(f"--density applies to --method {', '.join(WITH_DENSITY)}, not {method}")
        return
    if density is None:
        raise UserError(f"--method {method} needs --density (the kept fraction, e.g. 0.5)")
    problem = density_problem(density)
    if problem:
        raise UserError(f"--density {problem}")


@dataclass
class GraftPlan:
    """Everything a graft will do, decided from the headers before any weight is read."""

    target: Checkpoint
    sources: list[DeltaSource]
    out: Path
    layout: list[PlannedTensor]                  # the output's tensors, in write order
    work: dict[str, list[DeltaSource]]           # grafted tensor -> the sources adding to it
    factors: dict[str, list[float]]              # grafted tensor -> each source's scale there
    skipped: list[dict]
    tokenizers: list[dict]
    options: dict
    template_plan: dict | None = None
    notes: list[str] = field(default_factory=list)
    force: bool = False                          # --force: publication may replace an existing output

    def describe(self) -> dict:
        """The plan as `graft --dry-run --json` prints it."""
        return {
            "dry_run": True, "output": str(self.out), "target": self.target.source,
            "sources": [s.label for s in self.sources], "options": self.options,
            "tensors": {"total": len(self.layout), "grafted": len(self.work),
                        "copied": len(self.layout) - len(self.work)},
            "grafted": [{"tensor": name, "sources": [self.sources.index(s) for s in active],
                         "scales": self.factors[name]} for name, active in self.work.items()],
            "skipped": self.skipped, "tokenizers": self.tokenizers, "notes": self.notes,
            "chat_template_from": str(self.template_plan["source"]) if self.template_plan else None,
        }


def plan_graft(target_dir, out_dir, *, sources=(), include=(), exclude=(), with_embeddings: bool = False,
               force: bool = False, assume_vector: bool = False, assume_model: bool = False,
               allow_arch_mismatch: bool = False,
               allow_pickle: bool = False, chat_template_from=None, method: str = "sum",
               density: float | None = None, seed: int = 0, schedule: Schedule | None = None,
               source_schedules: list[Schedule | None] | None = None) -> GraftPlan:
    """Open and check every input, decide every tensor's fate; raise if nothing would change."""
    from skillgraft.tokenizer import compare_tokenizers, plan_chat_template

    check_method(method, density)
    target = Checkpoint(target_dir, allow_pickle=allow_pickle, role="target")
    require_model(target, "target", assume_model)
    opened = open_sources(sources, allow_pickle=allow_pickle, assume_vector=assume_vector, assume_model=assume_model)
    for source, own in zip(opened, source_schedules or []):
        source.schedule = own
    for rules in [schedule, *(source.schedule for source in opened)]:
        if rules is not None and rules.num_layers is None:
            rules.num_layers = target.num_layers or 1 + max(
                (i for n in target.names if (i := layer_index(n)) is not None), default=0)
    inputs_seen = [target.path]
    for source in opened:
        for _, checkpoint in source.checkpoints():
            check_same_architecture(target, checkpoint, allow_arch_mismatch)
            inputs_seen.append(checkpoint.path)
    out = Path(out_dir)
    template_plan = None
    if chat_template_from:
        template_source = resolve_model(chat_template_from, "--chat-template-from").path
        inputs_seen.append(template_source)
        template_plan = plan_chat_template(template_source, target.path)
    check_output(out, inputs_seen, force=force)
    tokenizers = [compare_tokenizers(source.reference.path, target.path) for source in opened]
    notes = []
    if with_embeddings:
        for source, report in zip(opened, tokenizers):
            source.aliases = tie_aliases(source, target)
            if report["relation"] not in ("identical", "unknown"):
                source.alignment = align(source.reference.path, target.path,
                                         source.base.path if source.base is not None else None,
                                         source.skilled.path if source.skilled is not None else None)
        if head_is_tied(target) and "output_head" in embedding_tensors(target):
            notes.append("the target ties its output head to its input embeddings: its head tensor is ignored "
                         "by from_pretrained, so it is copied unchanged and the embedding delta moves both")
    selection = TensorFilter(list(include), list(exclude))

    layout, work, skipped = [], {}, []
    tied_target = head_is_tied(target)
    for name in target.names:
        info = target.tensors[name]
        layout.append(PlannedTensor(name, info.dtype, info.shape))
        reason = role = None
        if not info.is_float:
            reason = f"target {float_reason(info.dtype)} (copied unchanged)"
        elif (role := embedding_role(name, info.shape, target.vocab_size)) and not with_embeddings:
            reason = f"{role} of the target (kept; pass --with-embeddings to graft it)"
        elif role == "output_head" and tied_target:
            reason = "output_head of a target that ties it to the input embeddings (from_pretrained ignores it)"
        else:
            reason = selection.reason_to_skip(name)
        for source in opened:
            if role and not reason and source.alignment is not None:
                source.alignment.shapes[source.source_name(name)] = info.shape
        if reason:
            skipped.append({"tensor": name, "reason": reason})
            continue
        active = []
        for index, source in enumerate(opened):
            why = source.skip_reason(name, info.shape)
            if why:
                skipped.append({"tensor": name, "source": index, "reason": why})
            else:
                active.append(source)
        if active:
            work[name] = active
    for index, source in enumerate(opened):
        used = {source.source_name(n) for n in target.names}
        for name in source.reference.names:
            if name in used:
                continue
            role = embedding_role(name, source.reference.tensors[name].shape, source.reference.vocab_size)
            why = ("output_head the target does not have: it ties its head to the input embeddings"
                   if role == "output_head" and tied_target else "not in target")
            skipped.append({"tensor": name, "source": index, "reason": why})
    if not work:
        raise nothing_selected("graft", target, selection, skipped, with_embeddings)
    factors = {name: [source.scale_for(name, schedule) for source in active] for name, active in work.items()}
    options = {"include": list(include), "exclude": list(exclude), "with_embeddings": with_embeddings,
               "method": method, "density": density, "seed": seed, "assume_vector": assume_vector, "assume_model": assume_model,
               "schedule": schedule.describe() if schedule is not None and not schedule.empty else None,
               "allow_arch_mismatch": allow_arch_mismatch,
               "chat_template_from": str(template_plan["source"].resolve()) if template_plan else None}
    return GraftPlan(target, opened, out, layout, work, factors, skipped, tokenizers, options, template_plan, notes,
                     force)


def execute_graft(plan: GraftPlan, *, quiet: bool = True, allow_nonfinite: bool = False,
                  shard_size: int = DEFAULT_SHARD_SIZE) -> dict:
    """Write `target + merge(scale·vector, ...)` (float32, cast to the target's dtype) as planned."""
    from skillgraft.tokenizer import apply_chat_template

    target, work, factors, out = plan.target, plan.work, plan.factors, plan.out
    for note in plan.notes:
        if not quiet:
            print(f"note: {note}", file=sys.stderr)
    special_rows: dict[str, str] = {}
    progress = Progress("graft", total_bytes=target.total_bytes, total_tensors=len(plan.layout), quiet=quiet)
    with AtomicFolder(out, force=plan.force) as temp, progress:
        grafted = grafted_blocks(plan, allow_nonfinite, special_rows)

        def produce(planned: PlannedTensor):
            return grafted(planned) if planned.name in work else copied_blocks(target, planned.name)

        writer = ShardedWriter(temp, plan.layout, shard_size, metadata={"skillgraft_kind": "model"})
        hashes = stream_tensors(plan.layout, produce, writer, progress, lambda name: target.tensors[name].nbytes)
        copy_side_files(target.path, temp)
        template_report = apply_chat_template(plan.template_plan, temp) if plan.template_plan else None
        manifest = write_manifest(
            temp, kind="model",
            inputs=[input_record("target", target)] + [
                {**input_record(role, checkpoint), "source": index, "scale": source.scale}
                for index, source in enumerate(plan.sources) for role, checkpoint in source.checkpoints()],
            options={**plan.options, "shard_size": shard_size, "allow_nonfinite": allow_nonfinite},
            file_sha256=hashes,
            extra={"tensors": {"total": len(plan.layout), "grafted": len(work), "copied": len(plan.layout) - len(work)},
                   "scales": {name: f for name, f in factors.items()
                              if any(x != s.scale for x, s in zip(f, work[name]))},
                   "skipped": plan.skipped, "notes": plan.notes, "tokenizers": plan.tokenizers,
                   "chat_template": template_report,
                   "vocab_alignment": [None if s.alignment is None else
                                       {**s.alignment.report(), "special_copied": sorted(
                                           k for k, v in special_rows.items() if v == s.label)}
                                       for s in plan.sources]},
            card=Card(title=f"{target.source} + skill vectors", tags=["chat-vector", "task-arithmetic"],
                      summary=_graft_summary(plan)),
        )
    return {"output": str(out), **manifest}


def grafted_blocks(plan: GraftPlan, allow_nonfinite: bool = False, special_rows: dict | None = None):
    """`produce(planned)` for a tensor the plan grafts: its result block by block, in the
    planned dtype. The one place the graft arithmetic happens, for the written folder and for
    a model grafted in memory (`vectors.memory.graft_in_memory`) alike, so both hold the same bits."""
    target, work, factors, out = plan.target, plan.work, plan.factors, plan.out
    method, density, seed = plan.options["method"], plan.options["density"], plan.options["seed"]
    special_rows = {} if special_rows is None else special_rows

    def produce(planned: PlannedTensor):
        name = planned.name
        pairs = list(zip(work[name], factors[name]))
        if method == "sum":
            def parts(start: int, stop: int) -> list:
                return [(target.read_entries(name, start, stop), None, 1.0),
                        *(source.part(name, factor, start, stop) for source, factor in pairs)]
        else:  # target + merged == merged + target bit for bit
            drawn = dare_generators(seed, name, len(work[name])) if REGISTRY[method].drops else None
            merging = TensorMerge(method, [source.delta_reader(name) for source in work[name]], factors[name],
                                  list(blocks(planned.shape)), density=density, generators=drawn,
                                  row=math.prod(planned.shape[1:]))

            def parts(start: int, stop: int) -> list:
                return [(target.read_entries(name, start, stop), None, 1.0), (merging.block(start, stop), None, 1.0)]
        patches = []
        for source, factor in pairs:
            if source.alignment is not None and source.alignment.special and name in source.alignment.shapes:
                patches.append(chat_rows(target, source.skilled, name, factor, source.alignment.special))
                special_rows.update({f"{name}: {token}": source.label for token in patches[-1].rows})
        return computed_blocks(planned, parts, allow_nonfinite, out, patches)
    return produce


def _graft_summary(plan: GraftPlan) -> str:
    method = plan.options["method"]
    how = "summed in float32" if method == "sum" else f"merged with {method} (density {plan.options['density']:g})"
    lines = [f"`{plan.target.source}` plus {len(plan.sources)} vector(s), {how} and cast back to the target's "
             f"dtype; {len(plan.work)} of {len(plan.layout)} tensors changed.", ""]
    lines += [f"- {source.label}" for source in plan.sources]
    return "\n".join(lines)


def graft(target_dir, out_dir, *, sources=(), dry_run: bool = False, quiet: bool = True,
          allow_nonfinite: bool = False, shard_size: int = DEFAULT_SHARD_SIZE, **options) -> dict:
    """Plan and run a graft: `out = cast(target + Σ scale·delta)` (see `plan_graft` for the
    options). `sources` lists `(vector_dir, scale)` and `(base_dir, skilled_dir, scale)` in
    the order they are summed. With `dry_run`, return the plan and write nothing."""
    plan = plan_graft(target_dir, out_dir, sources=sources, **options)
    if dry_run:
        return plan.describe()
    return execute_graft(plan, quiet=quiet, allow_nonfinite=allow_nonfinite, shard_size=shard_size)
