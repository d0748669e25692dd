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
@click.option("--method", type=click.Choice(["sum", "ties", "dare"]), default="sum", show_default=True)
@click.option("--density", type=float, default=None, help="Kept fraction for ties/dare.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for dare.")
@click.option("--with-embeddings", is_flag=True, help="Also graft input embeddings and output head.")
@click.option("--chat-template-from", type=click.Path(), default=None,
              help="Take the chat template (and the stop tokens it needs) from this checkpoint.")
@click.option("--shard-size", default="5GB", show_default=True)
@click.option("--force", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--allow-arch-mismatch", is_flag=True)
@click.option("--allow-nonfinite", is_flag=True)
@click.option("--allow-pickle", is_flag=True, help="Read .bin weights with torch.load(weights_only=True).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def graft_command(target, vectors, out, deltas, include, exclude, method, density, seed, with_embeddings,
                  chat_template_from, shard_size, force, allow_arch_mismatch, allow_nonfinite, allow_pickle,
                  quiet, as_json):
    """out = TARGET + Σ scale·VECTOR (float32 sums, cast back to the target's dtype)."""
    from skillgraft.vectors import graft

    if method != "sum":
        raise UserError(f"--method {method} is not available in this version; use --method sum")
    if density is not None:
        raise UserError("--density applies to --method ties/dare only")
    vector_specs = [split_scale(v) for v in vectors]
    delta_specs = []
    for base, skilled_spec in deltas:
        skilled, scale = split_scale(skilled_spec)
        delta_specs.append((base, skilled, scale))
    result = graft(target, out, vectors=vector_specs, deltas=delta_specs, include=include, exclude=exclude,
                   with_embeddings=with_embeddings, force=force, quiet=quiet,
                   allow_arch_mismatch=allow_arch_mismatch, allow_nonfinite=allow_nonfinite,
                   allow_pickle=allow_pickle, shard_size=_size(shard_size), chat_template_from=chat_template_from)
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
        path: str = typer.Argument(..., help="A checkpoint or vector folder."),
        as_json: bool = typer.Option(False, "--json"),
        allow_pickle: bool = typer.Option(False, "--allow-pickle"),
    ) -> None:
        """Tensors, dtypes and sizes; per-layer norms when PATH is a vector."""
        from skillgraft.vectors.analysis import inspect_folder, render_inspect

        report = inspect_folder(Path(path), allow_pickle=allow_pickle)
        if as_json:
            emit_json(report)
        else:
            render_inspect(report)

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
