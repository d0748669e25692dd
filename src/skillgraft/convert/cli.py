"""`skillgraft convert gguf FILE -o DIR`: thin CLI over `skillgraft.convert.gguf`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Attach the `convert` group to the main app."""
    convert_app = typer.Typer(help="Turn other model formats into checkpoint folders.", no_args_is_help=True)

    @convert_app.command("gguf")
    def gguf_command(
        gguf_file: Path = typer.Argument(..., help="A .gguf file (any quantisation transformers can dequantise)."),
        out: Path = typer.Option(..., "-o", "--out", help="Output checkpoint folder (published by rename)."),
        dtype: str = typer.Option("float32", "--dtype", help="float32 (exact dequantised values) or bfloat16."),
        force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
        as_json: bool = typer.Option(False, "--json", help="Print the manifest as one JSON object."),
    ) -> None:
        """Convert a GGUF model into a folder plain `from_pretrained` loads."""
        from skillgraft.convert.gguf import convert_gguf

        result = convert_gguf(gguf_file, out, dtype=dtype, force=force)
        if as_json:
            print(json.dumps(result))
        else:
            source = result["inputs"][0]
            print(f"wrote {out} ({source['architecture']}, {source['quantization']} → {dtype})", file=sys.stderr)

    app.add_typer(convert_app, name="convert")
