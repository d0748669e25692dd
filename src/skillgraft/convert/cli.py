"""`skillgraft convert gguf FILE -o DIR`: thin CLI over `skillgraft.convert.gguf`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from skillgraft.clikit import emit_json, force_option, group, json_option, quiet_option, threads_option

convert = group("convert", "Turn other model formats into checkpoint folders.")


@convert.command("gguf", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("gguf_file", type=click.Path(path_type=Path), metavar="FILE.gguf")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Output checkpoint folder (published by rename).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
              help="float32 keeps the dequantised values exactly; bfloat16 halves the size.")
@force_option(help="Replace the output folder if skillgraft wrote it.")
@json_option(help="Print the manifest as one JSON object.")
@quiet_option
@threads_option
def gguf_command(gguf_file, out, dtype, force, as_json, quiet):
    """Convert a GGUF model (any quantisation transformers can dequantise) into a folder plain
    `from_pretrained` loads."""
    from skillgraft.convert.gguf import convert_gguf

    result = convert_gguf(gguf_file, out, dtype=dtype, force=force, quiet=quiet)
    if as_json:
        emit_json(result)
    else:
        source = result["inputs"][0]
        if not quiet:
            print(f"wrote {out} ({source['architecture']}, {source['quantization']} → {dtype})", file=sys.stderr)


def register(cli: click.Group) -> None:
    cli.add_command(convert)
