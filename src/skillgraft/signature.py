"""Config = signature: a verb's options derived from the pydantic model its recipe file uses.

An operation's options are declared once, as fields of its model (type, default, and the help
in `Field(description=...)`); `options(Model)` turns them into Click options, `from_cli`
validates what the command line gave with the same model, so `graft -o OUT ...` and
`skillgraft run graft.yaml` mean the same thing, and the sweep's keys are the same fields
(`sweep.config.recipe_keys`). A field appears on the command line as `--field-name` unless a
`Cli` marker renames it or gives a metavar; fields whose command-line form differs from their
file form (positional arguments, `VECTOR:SCALE`, schedules) are skipped and built by the verb.

The mapping: bool -> flag, Literal -> choice, list[str] -> repeatable, int / float -> typed,
anything else -> text (`shard_size: 5GB`).
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import click
from pydantic import BaseModel, ValidationError

from skillgraft.config import field_names
from skillgraft.errors import UserError


@dataclass(frozen=True)
class Cli:
    """Field metadata for its option: other flag names, a metavar (`Annotated[str, Cli(metavar="MODEL")]`)."""

    decls: tuple[str, ...] = ()
    metavar: str | None = None


def flag(name: str) -> str:
    """The option a field gets when no `Cli` marker names it: `allow_pickle` -> `--allow-pickle`."""
    return "--" + name.replace("_", "-")


def _marker(field) -> Cli:
    return next((m for m in field.metadata if isinstance(m, Cli)), Cli())


def _inner(annotation):
    """`Optional[X]` -> X (other unions are left as they are)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def option_for(name: str, field) -> click.Option:
    """The Click option of one model field."""
    marker, kind = _marker(field), _inner(field.annotation)
    decls = [*(marker.decls or (flag(name),)), name]
    default = field.get_default(call_default_factory=True)
    extra: dict[str, Any] = {"help": field.description, "metavar": marker.metavar}
    if kind is bool:
        if default:
            decls[-2] = f"{decls[-2]}/--no-{decls[-2].removeprefix('--')}"
        return click.Option(decls, is_flag=True, default=bool(default), **extra)
    if typing.get_origin(kind) is Literal:
        return click.Option(decls, type=click.Choice([str(v) for v in typing.get_args(kind)]), default=default,
                            show_default=True, **extra)
    if typing.get_origin(kind) is list:
        return click.Option(decls, multiple=True, default=tuple(default or ()), **extra)
    shown = default is not None
    if kind in (int, float):
        return click.Option(decls, type=kind, default=default, show_default=shown, **extra)
    return click.Option(decls, type=str, default=None if default is None else str(default), show_default=shown,
                        **extra)


def options(model: type[BaseModel], *, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None):
    """A decorator adding one Click option per field of `model` (its own fields first, as
    `config.field_names` lists them), except `skip`."""
    names = [n for n in field_names(model) if n not in skip and (only is None or n in only)]

    def decorate(f):
        params = getattr(f, "__click_params__", [])
        for name in reversed(names):   # Click lists decorator-added options in reverse
            params.append(option_for(name, model.model_fields[name]))
        f.__click_params__ = params
        return f

    return decorate


def from_cli(model: type[BaseModel], values: dict) -> BaseModel:
    """Validate the command line's values with the recipe's model; a problem is one UserError
    naming the option (`--density: 2 is outside (0, 1] ...`)."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        key = str(error["loc"][0]) if error["loc"] else ""
        field = model.model_fields.get(key)
        where = (_marker(field).decls or (flag(key),))[-1] if field is not None else key
        raise UserError(f"{where}: {error['msg'].removeprefix('Value error, ')}") from None


def cli_values(model: type[BaseModel], params: dict) -> dict:
    """The model's fields among a command's parameters (Click gives tuples for lists)."""
    return {name: list(value) if isinstance(value, tuple) else value
            for name, value in params.items() if name in model.model_fields}
