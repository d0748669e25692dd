"""Core verbs: extract, graft, inspect, verify, demo (contract in DESIGN.md §2).

`graft` is a plain Click command because `--delta BASE SKILLED[:SCALE]` takes two values and
repeats, which Typer cannot express; the rest are Typer commands. All are thin: parse,
call `skillgraft.vectors` / `skillgraft.checkpoint`, print.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click
import typer

from skillgraft.errors import UserError

DTYPE_CHOICES = ("float32", "bfloat16", "float16")


def split_scale(spec: str, *, default: float = 1.0) -> tuple[str, float]:
    """'path:0.5' -> ('path', 0.5); a suffix that is not a number stays part of the path."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return spec, default


def emit_json(payload: dict) -> None:
    """The one JSON object `--json` promises on stdout."""
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


def _summary(kind: str, result: dict) -> str:
    tensors = result.get("tensors", {})
    skipped = result.get("skipped", [])
    reasons: dict[str, int] = {}
    for entry in skipped:
        key = entry["reason"].split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    lines = [f"{kind} written to {result['output']}: " + ", ".join(f"{k} {v}" for k, v in tensors.items())]
    lines += [f"  skipped {count}: {reason}" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])]
    for report in result.get("tokenizers") if isinstance(result.get("tokenizers"), list) else [result.get("tokenizers")]:
        if report:
            lines.append(f"  tokenizer {report.get('reference')} vs {report.get('target')}: {report['relation']}")
    for index, rows in enumerate(result.get("vocab_alignment") or []):
        if rows:
            lines.append(f"  vocabulary rows of vector {index}: {rows['shared']} shared tokens got the delta, "
                         f"{rows['target_only']} target-only kept, {rows['vector_only']} vector-only dropped; "
                         f"chat-model rows copied: {', '.join(rows['special_copied']) or 'none'}")
    return "\n".join(lines)


def _size(shard_size: str) -> int:
    from skillgraft.checkpoint import parse_size

    return parse_size(shard_size)


@click.command("graft", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target")
@click.argument("vectors", nargs=-1, metavar="VECTOR[:SCALE]...")
@click.option("-o", "--out", required=True, help="Output model folder.")
@click.option("--delta", "deltas", nargs=2, multiple=True, metavar="BASE SKILLED[:SCALE]",
              help="Add SKILLED − BASE without saving a vector (repeatable).")
@click.option("--include", multiple=True, help="Regex: only tensors whose names match (repeatable).")
@click.option("--exclude", multiple=True, help="Regex: skip matching tensors; wins over --include (repeatable).")
@click.option("--method", type=click.Choice(["sum", "ties", "dare", "dare_ties", "magnitude"]), default="sum",
              show_default=True, help="How several vectors combine per tensor (peft's semantics).")
@click.option("--density", type=float, default=None,
              help="Kept fraction for ties/dare/dare_ties/magnitude (DARE drops with p = 1 - density).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for DARE's masks (per tensor, from the seed and the tensor name).")
@click.option("--scale-layers", multiple=True, metavar="FIRST-LAST=FACTOR",
              help="Scale the vectors in a layer range, e.g. 0-7=0.5 (repeatable; the last match wins).")
@click.option("--scale-modules", multiple=True, metavar="KIND=FACTOR",
              help="Scale by module kind (attention, mlp, norm, embedding, other); FACTOR may be a "
                   "depth list like [0,1] (repeatable).")
@click.option("--scale-depth", default=None, metavar="[A, B, ...]",
              help="Scale curve over depth: anchors spread from first to last layer, interpolated.")
@click.option("--with-embeddings", is_flag=True,
              help="Also graft input embeddings and output head; when vocabularies differ, rows are matched "
                   "by token string and untrained chat-token rows get the chat model's rows (with --delta).")
@click.option("--chat-template-from", type=click.Path(), default=None,
              help="Take the chat template (and the stop tokens it needs) from this checkpoint.")
@click.option("--shard-size", default="5GB", show_default=True)
@click.option("--force", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--allow-arch-mismatch", is_flag=True)
@click.option("--allow-nonfinite", is_flag=True)
@click.option("--allow-pickle", is_flag=True, help="Read .bin weights with torch.load(weights_only=True).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def graft_command(target, vectors, out, deltas, include, exclude, method, density, seed, scale_layers,
                  scale_modules, scale_depth, with_embeddings, chat_template_from, shard_size, force,
                  allow_arch_mismatch, allow_nonfinite, allow_pickle, quiet, as_json):
    """out = TARGET + Σ scale·VECTOR (float32 sums, cast back to the target's dtype), or another --method."""
    from skillgraft.vectors import graft
    from skillgraft.vectors.schedule import build_schedule

    schedule = build_schedule(scale_layers, scale_modules, scale_depth)
    vector_specs = [split_scale(v) for v in vectors]
    delta_specs = []
    for base, skilled_spec in deltas:
        skilled, scale = split_scale(skilled_spec)
        delta_specs.append((base, skilled, scale))
    result = graft(target, out, vectors=vector_specs, deltas=delta_specs, include=include, exclude=exclude,
                   with_embeddings=with_embeddings, force=force, quiet=quiet,
                   allow_arch_mismatch=allow_arch_mismatch, allow_nonfinite=allow_nonfinite,
                   allow_pickle=allow_pickle, shard_size=_size(shard_size), chat_template_from=chat_template_from,
                   method=method, density=density, seed=seed, schedule=None if schedule.empty else schedule)
    if as_json:
        emit_json(result)
    elif not quiet:
        print(_summary("model", result), file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Define the core Typer verbs; `graft` is added to the Click group by `skillgraft.cli`."""

    @app.command("extract")
    def extract_command(
        base: str = typer.Argument(..., help="Base model folder."),
        skilled: str = typer.Argument(..., help="Skilled (fine-tuned) model folder."),
        out: str = typer.Option(..., "-o", "--out", help="Output vector folder."),
        include: Optional[list[str]] = typer.Option(None, "--include", help="Regex on tensor names (repeatable)."),
        exclude: Optional[list[str]] = typer.Option(None, "--exclude", help="Regex; wins over --include."),
        dtype: str = typer.Option("float32", "--dtype", help="Stored dtype: float32, bfloat16, float16."),
        shard_size: str = typer.Option("5GB", "--shard-size"),
        force: bool = typer.Option(False, "--force"),
        allow_arch_mismatch: bool = typer.Option(False, "--allow-arch-mismatch"),
        allow_nonfinite: bool = typer.Option(False, "--allow-nonfinite"),
        allow_pickle: bool = typer.Option(False, "--allow-pickle"),
        quiet: bool = typer.Option(False, "--quiet"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """VECTOR = SKILLED − BASE per tensor, computed in float32."""
        from skillgraft.vectors import extract

        if dtype not in DTYPE_CHOICES:
            raise UserError(f"--dtype {dtype!r} is not one of {', '.join(DTYPE_CHOICES)}")
        result = extract(base, skilled, out, include=include or [], exclude=exclude or [], dtype=dtype,
                         force=force, quiet=quiet, allow_arch_mismatch=allow_arch_mismatch,
                         allow_nonfinite=allow_nonfinite, allow_pickle=allow_pickle, shard_size=_size(shard_size))
        if as_json:
            emit_json(result)
        elif not quiet:
            print(_summary("vector", result), file=sys.stderr)

    @app.command("inspect")
    def inspect_command(
        path: Optional[str] = typer.Argument(None, help="A checkpoint or vector folder."),
        base: Optional[str] = typer.Option(None, "--base", help="Base model: adds ‖Δ‖/‖W‖; a model PATH is "
                                           "then diagnosed as PATH − BASE."),
        compare: Optional[str] = typer.Option(None, "--compare", help="Another vector (or model, with --base): "
                                              "cosine and sign-conflict rate per layer and module."),
        transfer: Optional[tuple[str, str, str]] = typer.Option(
            None, "--transfer", metavar="BASE SKILLED TARGET",
            help="Compare the skill delta (SKILLED − BASE) with the target's drift (TARGET − BASE)."),
        top_k: int = typer.Option(8, "--top-k", help="Singular values counted in the energy share."),
        svd_sample: int = typer.Option(4, "--svd-sample", help="How many matrices get an SVD (0: none)."),
        cp_threshold: float = typer.Option(0.05, "--cp-threshold", help="Warn when ‖Δ‖/‖W‖ of the attention/MLP "
                                           "matrices exceeds this (fine-tuning deltas are typically 0.001-0.02)."),
        as_json: bool = typer.Option(False, "--json"),
        allow_pickle: bool = typer.Option(False, "--allow-pickle"),
    ) -> None:
        """Tensors, dtypes and sizes; per-layer/module diagnostics for a vector or PATH − BASE."""
        from skillgraft.vectors.analysis import inspect_folder, render_inspect

        if transfer:
            if path or base or compare:
                raise UserError("--transfer BASE SKILLED TARGET takes no PATH, --base or --compare")
            from rich.console import Console

            from skillgraft.vectors.diagnostics import render_diagnostics, transfer_report

            report = transfer_report(*transfer, top_k=top_k, svd_sample=svd_sample, allow_pickle=allow_pickle,
                                     cp_threshold=cp_threshold)
            if as_json:
                emit_json(report)
                for warning in report["warnings"]:
                    print(f"warning: {warning}", file=sys.stderr)
            else:
                render_diagnostics(report, Console(file=sys.stdout))
            return
        if path is None:
            raise UserError("give a PATH to inspect, or --transfer BASE SKILLED TARGET")
        report = inspect_folder(Path(path), allow_pickle=allow_pickle, base=base, compare=compare, top_k=top_k,
                                svd_sample=svd_sample, cp_threshold=cp_threshold)
        if as_json:
            emit_json(report)
            for warning in report.get("diagnostics", {}).get("warnings", []):
                print(f"warning: {warning}", file=sys.stderr)
        else:
            render_inspect(report)

    app.add_typer(vector_app(), name="vector")

    @app.command("run")
    def run_command(
        recipe: str = typer.Argument(..., help="A graft recipe (YAML), e.g. recipes/chat-vector.yaml."),
        overrides: Optional[list[str]] = typer.Option(None, "--set", help="KEY=VALUE override; dotted for "
                                                      "nested keys, e.g. vectors.0.base=PATH (repeatable)."),
        out: Optional[str] = typer.Option(None, "-o", "--out", help="Output folder (overrides `output`)."),
        force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
        check: bool = typer.Option(False, "--check", help="Validate the recipe and print it; graft nothing."),
        quiet: bool = typer.Option(False, "--quiet"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Run a graft recipe: every `graft` option as a YAML key, validated before any work."""
        from skillgraft.recipe_graft import load_recipe, run_recipe

        parsed = load_recipe(recipe, overrides or [])
        if check:
            emit_json(parsed.model_dump()) if as_json else print(parsed.model_dump_json(indent=2))
            return
        result = run_recipe(parsed, quiet=quiet, output=out, force=force or None)
        _vector_output("model", result, as_json, quiet)

    @app.command("verify")
    def verify_command(
        path: str = typer.Argument(..., help="A folder written by skillgraft."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Recompute every file's sha256 against skillgraft.json."""
        from skillgraft.checkpoint import verify

        report = verify(path)
        if as_json:
            emit_json(report)
        elif report["ok"]:
            print(f"ok: {report['files']} files match {path}/skillgraft.json", file=sys.stderr)
            for name in report["unlisted"]:
                print(f"  note: {name} is not in the manifest", file=sys.stderr)
        if not report["ok"]:
            problems = [f"{n} (sha256 mismatch)" for n in report["mismatched"]] + [f"{n} (missing)" for n in report["missing"]]
            raise UserError(f"verify failed for {path}: {', '.join(problems)}")

    @app.command("demo")
    def demo_command(
        out: Optional[str] = typer.Option(None, "--out", help="Keep the demo's models here."),
        seed: int = typer.Option(0, "--seed"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """The built-in default: show a chat vector at work on the shipped lab models."""
        from skillgraft.demo import run

        result = run(Path(out) if out else None, seed=seed, as_json=as_json)
        if as_json:
            emit_json(result)


def _vector_output(kind: str, result: dict, as_json: bool, quiet: bool) -> None:
    if as_json:
        emit_json(result)
    elif not quiet:
        print(_summary(kind, result), file=sys.stderr)


def vector_app() -> typer.Typer:
    """`skillgraft vector ...`: arithmetic on saved vectors, streamed tensor by tensor."""
    vector = typer.Typer(help="Arithmetic on saved vectors (combine, scale, negate) and conversion to LoRA.",
                         no_args_is_help=True)

    def run_combine(specs, out, operation, dtype, shard_size, force, allow_nonfinite, quiet, as_json):
        from skillgraft.vectors.combine import combine_vectors

        result = combine_vectors(specs, out, dtype=dtype, operation=operation, force=force, quiet=quiet,
                                 allow_nonfinite=allow_nonfinite, shard_size=_size(shard_size))
        _vector_output("vector", result, as_json, quiet)

    def explicit_scale(spec: str) -> tuple[str, float]:
        path, scale = split_scale(spec, default=float("nan"))
        if scale != scale:
            raise UserError(f"{spec!r}: give a scale as VECTOR:SCALE, e.g. {spec}:0.5")
        return path, scale

    dtype_option = typer.Option("float32", "--dtype", help="Stored dtype: float32, bfloat16, float16.")
    out_option = typer.Option(..., "-o", "--out", help="Output vector folder.")

    @vector.command("combine")
    def combine_command(
        specs: list[str] = typer.Argument(..., metavar="VECTOR:SCALE...", help="Vectors with their scales."),
        out: str = out_option, dtype: str = dtype_option,
        shard_size: str = typer.Option("5GB", "--shard-size"), force: bool = typer.Option(False, "--force"),
        allow_nonfinite: bool = typer.Option(False, "--allow-nonfinite"),
        quiet: bool = typer.Option(False, "--quiet"), as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """OUT = Σ SCALE·VECTOR (SCALE defaults to 1; a tensor missing from a vector counts as zero there)."""
        run_combine([split_scale(s) for s in specs], out, "combine", dtype, shard_size, force, allow_nonfinite,
                    quiet, as_json)

    @vector.command("scale")
    def scale_command(
        spec: str = typer.Argument(..., metavar="VECTOR:SCALE"),
        out: str = out_option, dtype: str = dtype_option,
        shard_size: str = typer.Option("5GB", "--shard-size"), force: bool = typer.Option(False, "--force"),
        allow_nonfinite: bool = typer.Option(False, "--allow-nonfinite"),
        quiet: bool = typer.Option(False, "--quiet"), as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """OUT = SCALE·VECTOR."""
        run_combine([explicit_scale(spec)], out, "scale", dtype, shard_size, force, allow_nonfinite, quiet, as_json)

    @vector.command("negate")
    def negate_command(
        path: str = typer.Argument(..., metavar="VECTOR"),
        out: str = out_option, dtype: str = dtype_option,
        shard_size: str = typer.Option("5GB", "--shard-size"), force: bool = typer.Option(False, "--force"),
        quiet: bool = typer.Option(False, "--quiet"), as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """OUT = −VECTOR (to remove a skill: graft the negation)."""
        run_combine([(path, -1.0)], out, "negate", dtype, shard_size, force, False, quiet, as_json)

    @vector.command("to-lora")
    def to_lora_command(
        path: str = typer.Argument(..., metavar="VECTOR"),
        out: str = typer.Option(..., "-o", "--out", help="Output adapter folder."),
        rank: Optional[int] = typer.Option(None, "--rank", help="The same rank for every linear weight."),
        energy: Optional[float] = typer.Option(None, "--energy", help="Per weight, the smallest rank keeping "
                                               "this share of Σσ² (e.g. 0.9)."),
        max_rank: Optional[int] = typer.Option(None, "--max-rank", help="Cap for --energy."),
        include: Optional[list[str]] = typer.Option(None, "--include", help="Regex on tensor names (repeatable)."),
        exclude: Optional[list[str]] = typer.Option(None, "--exclude", help="Regex; wins over --include."),
        dtype: str = dtype_option, force: bool = typer.Option(False, "--force"),
        quiet: bool = typer.Option(False, "--quiet"), as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """A peft LoRA adapter from VECTOR by truncated SVD per linear weight; reports the error per module."""
        from skillgraft.vectors.lora import describe, vector_to_lora

        result = vector_to_lora(path, out, rank=rank, energy=energy, max_rank=max_rank, include=include or [],
                                exclude=exclude or [], dtype=dtype, force=force, quiet=True)
        if as_json:
            emit_json(result)
        elif not quiet:
            print(describe(result), file=sys.stderr)

    return vector
