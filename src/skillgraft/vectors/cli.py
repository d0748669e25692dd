"""Verbs of the vector layer: extract, graft, inspect and `vector combine|scale|negate|to-lora`.

Thin: parse, call `skillgraft.vectors`, print. Heavy imports happen inside the commands so
`skillgraft --help` stays instant.
"""

from __future__ import annotations

import sys

import click

from skillgraft.clikit import command, emit_json, force_option, group, json_option, quiet_option, split_scale
from skillgraft.errors import UserError
from skillgraft.signature import cli_values, from_cli, options
from skillgraft.vectors.recipe import GraftRecipe, Reading, Selection, Writing

DTYPES = click.Choice(["float32", "bfloat16", "float16"])


def summary(kind: str, result: dict) -> str:
    """The few lines a graft or extract prints on stderr: counts, skip reasons, tokenizers."""
    tensors = result.get("tensors", {})
    reasons: dict[str, int] = {}
    for entry in result.get("skipped", []):
        key = entry["reason"].split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    lines = [f"{kind} written to {result['output']}: " + ", ".join(f"{k} {v}" for k, v in tensors.items())]
    lines += [f"  skipped {count}: {reason}" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])]
    reports = result.get("tokenizers")
    for report in reports if isinstance(reports, list) else [reports]:
        if report:
            lines.append(f"  tokenizer {report.get('reference')} vs {report.get('target')}: {report['relation']}")
    alignments = result.get("vocab_alignment")
    for index, rows in enumerate(alignments if isinstance(alignments, list) else []):
        if rows:
            lines.append(f"  vocabulary rows of vector {index}: {rows['shared']} shared tokens got the delta, "
                         f"{rows['target_only']} target-only kept, {rows['vector_only']} vector-only dropped; "
                         f"chat-model rows copied: {', '.join(rows['special_copied']) or 'none'}")
    lines += [f"  note: {note}" for note in result.get("notes") or []]
    return "\n".join(lines)


def report(kind: str, result: dict, as_json: bool, quiet: bool) -> None:
    if as_json:
        emit_json(result)
    elif not quiet:
        print(summary(kind, result), file=sys.stderr)


def _size(shard_size: str) -> int:
    from skillgraft.checkpoint import parse_size

    return parse_size(shard_size)


@command("extract")
@click.argument("base")
@click.argument("skilled")
@click.option("-o", "--out", required=True, help="Output vector folder.")
@options(Selection)
@click.option("--dtype", type=DTYPES, default="float32", show_default=True, help="How the vector is stored.")
@options(Reading, skip=("assume_vector",))
@options(Writing)
@quiet_option
@json_option
def extract_command(base, skilled, out, include, exclude, dtype, assume_model, shard_size, force, allow_arch_mismatch,
                    allow_nonfinite, allow_pickle, quiet, as_json):
    """VECTOR = SKILLED − BASE per tensor, computed in float32.

    BASE and SKILLED are model folders, Hugging Face ids (org/name[@revision]) or lab:NAME.
    """
    from skillgraft.vectors import extract

    result = extract(base, skilled, out, include=include, exclude=exclude, dtype=dtype, force=force, quiet=quiet,
                     allow_arch_mismatch=allow_arch_mismatch, allow_nonfinite=allow_nonfinite,
                     allow_pickle=allow_pickle, assume_model=assume_model, shard_size=_size(shard_size))
    report("vector", result, as_json, quiet)


@command("graft")
@click.argument("target")
@click.argument("vectors", nargs=-1, metavar="[VECTOR[:SCALE]]...")
@click.option("-o", "--out", required=True, help="Output model folder.")
@click.option("--delta", "deltas", nargs=2, multiple=True, metavar="BASE SKILLED[:SCALE]",
              help="Add SKILLED − BASE without saving a vector (repeatable; summed after the VECTORs).")
@click.option("--scale-layers", multiple=True, metavar="FIRST-LAST=FACTOR",
              help="Scale the vectors in a layer range, e.g. 0-7=0.5, or a share of the depth, e.g. "
                   "0%-20%=0.5 (repeatable; the last match wins).")
@click.option("--scale-modules", multiple=True, metavar="KIND=FACTOR",
              help="Scale by module kind (attention, mlp, norm, embedding, other); FACTOR may be a depth list "
                   "like [0,1] (repeatable).")
@click.option("--scale-depth", default=None, metavar="[A, B, ...]",
              help="Scale curve over depth: anchors spread from the first to the last layer, interpolated.")
@click.option("--dry-run", is_flag=True, help="Print what would be grafted, copied, skipped and scaled, and why; "
              "write nothing.")
@options(GraftRecipe, skip=("kind", "target", "vectors", "output", "schedule"))
@quiet_option
@json_option
def graft_command(target, vectors, out, deltas, scale_layers, scale_modules, scale_depth, dry_run, quiet, as_json,
                  **fields):
    """OUT = TARGET + Σ SCALE·VECTOR, summed in float32 and cast back to the target's dtype
    (or merged with another --method).

    TARGET, VECTORs and --delta models are folders, Hugging Face ids (org/name[@revision]) or
    lab:NAME. The target's input embeddings and output head are kept unless --with-embeddings.
    Every option is a key of a graft recipe (`skillgraft run graft.yaml`), and the other way round.
    """
    from skillgraft.vectors import graft
    from skillgraft.vectors.recipe import graft_arguments, schedule_spec

    sources = [{"path": path, "scale": scale} for path, scale in map(split_scale, vectors)]
    for base, skilled_spec in deltas:
        skilled, scale = split_scale(skilled_spec)
        sources.append({"base": base, "skilled": skilled, "scale": scale})
    if not sources:
        raise UserError("nothing to graft: give at least one VECTOR[:SCALE] or --delta BASE SKILLED[:SCALE]")
    schedule = schedule_spec(scale_layers, scale_modules, scale_depth)
    recipe = from_cli(GraftRecipe, {**cli_values(GraftRecipe, fields), "target": target, "output": out,
                                    "vectors": sources, "schedule": schedule})
    result = graft(recipe.target, recipe.output, force=recipe.force, quiet=quiet, dry_run=dry_run,
                   **graft_arguments(recipe))
    if dry_run and not as_json:
        print_plan(result)
    else:
        report("model", result, as_json, quiet)


def print_plan(plan: dict) -> None:
    """`graft --dry-run`: the plan as a readable listing on stdout."""
    counts = plan["tensors"]
    print(f"graft {plan['target']} -> {plan['output']} (dry run: nothing written)")
    for index, label in enumerate(plan["sources"]):
        print(f"  source {index}: {label}")
    print(f"  {counts['grafted']} of {counts['total']} tensors grafted, {counts['copied']} copied unchanged")
    for entry in plan["grafted"]:
        scales = ", ".join(f"{s:g}" for s in entry["scales"])
        print(f"  graft {entry['tensor']}  (sources {entry['sources']}, scales {scales})")
    for entry in plan["skipped"]:
        source = f" [source {entry['source']}]" if "source" in entry else ""
        print(f"  skip  {entry['tensor']}{source}: {entry['reason']}")
    for note in plan["notes"]:
        print(f"  note: {note}")


@command("inspect")
@click.argument("path", required=False)
@click.option("--base", default=None, metavar="MODEL",
              help="Base model: adds ‖Δ‖/‖W‖; a model PATH is then diagnosed as PATH − BASE.")
@click.option("--compare", default=None, metavar="OTHER",
              help="Another vector (or model, with --base): cosine and sign-conflict rate per layer and module.")
@click.option("--transfer", nargs=3, default=None, metavar="BASE SKILLED TARGET",
              help="Compare the skill delta (SKILLED − BASE) with the target's drift (TARGET − BASE).")
@click.option("--top-k", type=int, default=8, show_default=True, help="Singular values counted in the energy share.")
@click.option("--svd-sample", type=int, default=4, show_default=True, help="How many matrices get an SVD (0: none).")
@click.option("--cp-threshold", type=float, default=0.05, show_default=True,
              help="Warn when ‖Δ‖/‖W‖ of the attention/MLP matrices exceeds this (fine-tuning deltas are "
                   "typically 0.001–0.02).")
@options(Reading, only=("allow_pickle",))
@json_option
def inspect_command(path, base, compare, transfer, top_k, svd_sample, cp_threshold, allow_pickle, as_json):
    """Tensors, dtypes and sizes of a folder; per-layer ‖Δ‖ and diagnostics for a vector or PATH − BASE."""
    from skillgraft.vectors.analysis import inspect_folder, render_inspect

    if transfer:
        if path or base or compare:
            raise UserError("--transfer BASE SKILLED TARGET takes no PATH, --base or --compare")
        from rich.console import Console

        from skillgraft.vectors.diagnostics import render_diagnostics, transfer_report

        result = transfer_report(*transfer, top_k=top_k, svd_sample=svd_sample, allow_pickle=allow_pickle,
                                 cp_threshold=cp_threshold)
        if as_json:
            emit_json(result)
            for warning in result["warnings"]:
                print(f"warning: {warning}", file=sys.stderr)
        else:
            render_diagnostics(result, Console(file=sys.stdout))
        return
    if path is None:
        raise UserError("give a PATH to inspect, or --transfer BASE SKILLED TARGET")
    result = inspect_folder(path, allow_pickle=allow_pickle, base=base, compare=compare, top_k=top_k,
                            svd_sample=svd_sample, cp_threshold=cp_threshold)
    if as_json:
        emit_json(result)
        for warning in result.get("diagnostics", {}).get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
    else:
        render_inspect(result)


vector = group("vector", "Arithmetic on saved vectors (combine, scale, negate) and conversion to a LoRA adapter.")


def _combine(specs, out, operation, dtype, shard_size, force, allow_nonfinite, assume_vector, quiet, as_json):
    from skillgraft.vectors.combine import combine_vectors

    result = combine_vectors(specs, out, dtype=dtype, operation=operation, force=force, quiet=quiet,
                             allow_nonfinite=allow_nonfinite, shard_size=_size(shard_size),
                             assume_vector=assume_vector)
    report("vector", result, as_json, quiet)


def _vector_output_options(f):
    for decorator in (json_option, quiet_option, options(Reading, only=("assume_vector",)), options(Writing),
                      click.option("--dtype", type=DTYPES, default="float32", show_default=True,
                                   help="How the result is stored."),
                      click.option("-o", "--out", required=True, help="Output vector folder.")):
        f = decorator(f)
    return f


@vector.command("combine", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("specs", nargs=-1, required=True, metavar="VECTOR[:SCALE]...")
@_vector_output_options
def combine_command(specs, out, dtype, shard_size, force, assume_vector, quiet, as_json, allow_nonfinite):
    """OUT = Σ SCALE·VECTOR (SCALE defaults to 1; a tensor missing from a vector counts as zero there)."""
    _combine([split_scale(s) for s in specs], out, "combine", dtype, shard_size, force, allow_nonfinite,
             assume_vector, quiet, as_json)


@vector.command("scale", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("spec", metavar="VECTOR:SCALE")
@_vector_output_options
def scale_command(spec, out, dtype, shard_size, force, assume_vector, quiet, as_json, allow_nonfinite):
    """OUT = SCALE·VECTOR."""
    _combine([split_scale(spec, default=None)], out, "scale", dtype, shard_size, force, allow_nonfinite,
             assume_vector, quiet, as_json)


@vector.command("negate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("path", metavar="VECTOR")
@_vector_output_options
def negate_command(path, out, dtype, shard_size, force, assume_vector, quiet, as_json, allow_nonfinite):
    """OUT = −VECTOR (to remove a skill: graft the negation)."""
    _combine([(path, -1.0)], out, "negate", dtype, shard_size, force, allow_nonfinite, assume_vector, quiet,
             as_json)


@vector.command("to-lora", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("path", metavar="VECTOR")
@click.option("-o", "--out", required=True, help="Output adapter folder.")
@click.option("--rank", type=int, default=None, help="The same rank for every linear weight.")
@click.option("--energy", type=float, default=None,
              help="Per weight, the smallest rank keeping this share of Σσ² (e.g. 0.9).")
@click.option("--max-rank", type=int, default=None, help="Cap for --energy.")
@options(Selection)
@click.option("--dtype", type=DTYPES, default="float32", show_default=True, help="How the factors are stored.")
@options(Reading, only=("assume_vector",))
@force_option
@quiet_option
@json_option
def to_lora_command(path, out, rank, energy, max_rank, include, exclude, dtype, assume_vector, force, quiet,
                    as_json):
    """A peft LoRA adapter from VECTOR by truncated SVD per linear weight; reports the error per module."""
    from skillgraft.vectors.lora import describe, vector_to_lora

    result = vector_to_lora(path, out, rank=rank, energy=energy, max_rank=max_rank, include=include,
                            exclude=exclude, dtype=dtype, force=force, quiet=True, assume_vector=assume_vector)
    if as_json:
        emit_json(result)
    elif not quiet:
        print(describe(result), file=sys.stderr)


def register(cli: click.Group) -> None:
    for verb in (extract_command, graft_command, inspect_command):
        cli.add_command(verb)


def register_vector(cli: click.Group) -> None:
    cli.add_command(vector)
