"""What every verb of the command line shares: the ordered command group, common options,
`PATH:SCALE` parsing and the one JSON object `--json` prints.

The CLI is plain Click: one help style for every verb (`-h`/`--help`), each option with its
help text, verbs listed in the order a user meets them rather than alphabetically.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from skillgraft.errors import UserError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Verbs(click.Group):
    """A command group that lists its verbs in the order they were added."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def group(name: str, help: str) -> Verbs:
    return Verbs(name=name, help=help, context_settings=CONTEXT, no_args_is_help=True)


def command(name: str, **kwargs):
    """`@command("graft")`: a Click command with the project's help options."""
    return click.command(name, context_settings=CONTEXT, **kwargs)


def emit_json(payload: dict) -> None:
    """The one JSON object `--json` promises on stdout."""
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


def split_scale(spec: str, *, default: float | None = 1.0) -> tuple[str, float]:
    """'vec:0.5' -> ('vec', 0.5); 'vec' -> ('vec', default). A suffix that is not a number is an
    error (`vec:abc`), unless the whole text names an existing folder or a `lab:` model."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            scale = float(tail)
        except ValueError:
            scale = None
        if scale is not None:
            if not math.isfinite(scale):
                raise UserError(f"{spec!r}: the scale {tail!r} is not a finite number")
            return head, scale
        if not (Path(spec).exists() or spec.startswith("lab:") and ":" not in spec[4:]):
            raise UserError(f"{spec!r}: the scale {tail!r} is not a number (write PATH:SCALE, e.g. {head}:0.5)")
    if default is None:
        raise UserError(f"{spec!r}: give a scale as VECTOR:SCALE, e.g. {spec}:0.5")
    return spec, default


def _flag(*names: str, default_help: str):
    """A shared on/off option: `@NAME` with its usual help, or `@NAME(help=...)` where a verb says
    more precisely what it does; declared once, so every verb spells and stores it alike."""
    def option(f=None, *, help: str | None = None):
        decorate = click.option(*names, is_flag=True, help=help or default_help)
        return decorate if f is None else decorate(f)
    return option


json_option = _flag("--json", "as_json", default_help="Print one JSON object on stdout (progress and messages go "
                                                      "to stderr).")
quiet_option = _flag("--quiet", default_help="No progress bar or summary on stderr.")
FORCE_HELP = "Replace the output folder if skillgraft wrote it (a folder with skillgraft.json)."
force_option = _flag("--force", default_help=FORCE_HELP)


def threads_option(f):
    """`--threads N` for a verb that computes on the CPU: recorded here (with `--quiet`), applied
    at its first model load (`skillgraft.cpu.ensure_threads`)."""
    import functools

    @functools.wraps(f)
    def wrapper(*args, threads=None, **kwargs):
        from skillgraft import cpu

        cpu.configure(threads, None if kwargs.get("quiet") else cpu.stderr_line)
        return f(*args, **kwargs)

    return click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
                        help="CPU threads for torch (default: the cores other processes leave free, or "
                             "OMP_NUM_THREADS).")(wrapper)

