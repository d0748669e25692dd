"""The one loader for every YAML file the tool reads: graft recipes, training configs,
evaluation suites and sweep configs.

A config is a pydantic model whose fields are the parameters of one run (litgpt's rule: a
YAML key = a parameter). Everything about reading it is the same whatever the kind:

- `--set KEY=VALUE` overrides any key; dotted for nested keys, digits index lists
  (`--set vectors.0.base=PATH`, `--set lora.r=32`); the value is parsed as YAML
  (`--set lora.targets=[q_proj,v_proj]`, `--set merge=false`).
- A problem is one `UserError` naming the file and the key, with "did you mean" for a
  misspelt key or choice: `recipe.yaml: lora.rnk: unknown key (did you mean 'r'?)`.
- Relative paths written in the file are relative to the file's folder, so a config and
  its data travel together. Paths given with `--set` are relative to the current
  directory, like any other path typed on the command line. Fields holding a path are
  marked `Annotated[str, PATH]`; fields naming a model (`Annotated[str, MODEL]`) take a
  path only when it exists relative to the file (or is written `./...`); otherwise the
  value is left for the model resolver (a Hugging Face id such as `org/name`). Fields that
  take a file or a built-in name (`Annotated[str, NAMED]`: a suite, the `general` prompts)
  are resolved the same way, but are not models.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from skillgraft.errors import UserError

Config = TypeVar("Config", bound=BaseModel)


@dataclass(frozen=True)
class PathMarker:
    """Annotation marker: this string field is a path (`file`) or a model reference (`model`)."""

    kind: str


PATH = PathMarker("file")
MODEL = PathMarker("model")
NAMED = PathMarker("named")


def read_yaml(path: str | Path, what: str = "config") -> dict:
    """A YAML mapping from `path`; every problem is one UserError naming the file (and line)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', None) or exc}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise UserError(f"{path}: a {what} is a YAML mapping of keys to values")
    return tree


# Each recipe kind: the pydantic model that declares it (config = signature) and the function
# that reads a file of it. `run FILE`, a sweep's base and the verbs read the same model.
# Imported when asked for, so this low layer imports none of them.
RECIPE_KINDS = {
    "graft": ("skillgraft.vectors.recipe:GraftRecipe", "skillgraft.vectors.recipe:load_recipe"),
    "train": ("skillgraft.train.config:TrainConfig", "skillgraft.train.config:load_train_config"),
    "sweep": ("skillgraft.sweep.config:SweepConfig", "skillgraft.sweep.config:load_sweep_config"),
}
KINDS = tuple(RECIPE_KINDS)


def _named(spec: str):
    import importlib

    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def recipe_model(kind: str) -> type[BaseModel]:
    """The model of a recipe kind (`graft` -> GraftRecipe)."""
    return _named(RECIPE_KINDS[kind][0])


def recipe_loader(kind: str):
    """`load(path, overrides) -> model instance` for a recipe kind, validated and checked."""
    return _named(RECIPE_KINDS[kind][1])


def kind_of(tree: dict, where: str, kinds: tuple[str, ...] = KINDS) -> str:
    """A recipe tree's `kind` (what `run FILE` dispatches on and a sweep's base is); without one, a tree with `target` is a graft, with `model` a
    training config."""
    kind = tree.get("kind")
    if kind is None:
        kind = "graft" if "target" in tree else "train" if "model" in tree else None
    if kind not in kinds:
        raise UserError(f"{where}: kind: {kind!r} is not one of {', '.join(kinds)} (a graft recipe has `target` "
                        "and `vectors`; a training config has `model` and `data`; a sweep has `base` and `space`)")
    return kind


def apply_override(tree: dict, override: str, source: str) -> str:
    """Apply one `KEY=VALUE` to the raw tree; returns the dotted key."""
    import yaml

    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {override!r}: expected KEY=VALUE, e.g. --set lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise UserError(f"--set {override!r}: the value is not valid YAML") from None
    keys = key.split(".")
    node: Any = tree
    for depth, part in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) > len(node):
                raise UserError(f"{source}: --set {key}: {part!r} is not an index of that list "
                                f"(0..{len(node) - 1}, or {len(node)} to add one)")
            index = int(part)
            if index == len(node):
                node.append({})
            if last:
                node[index] = value
            node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = [] if keys[depth + 1].isdigit() else {}
                node = node[part]
        else:
            raise UserError(f"{source}: --set {key}: {'.'.join(keys[:depth])} is a value, not a section")
    return key


def load_config(path: str | Path | None, model: type[Config], overrides: list[str] | tuple[str, ...] = (), *,
                base: dict | None = None, what: str = "config") -> Config:
    """Read `path` (or start from `base`), apply `overrides`, validate against `model` and
    resolve relative paths (see the module doc). Every problem is one UserError."""
    tree: dict = dict(base or {})
    source = "config"
    if path is not None:
        tree.update(read_yaml(path, what))
        source = str(path)
    overridden = [apply_override(tree, item, source) for item in overrides]
    config = validate(tree, model, source)
    if path is not None:
        resolve_paths(config, Path(path).parent, overridden)
    return config


def validate(tree: dict, model: type[Config], source: str) -> Config:
    """`model.model_validate(tree)`, with the first problem as one readable UserError."""
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise UserError(f"{source}: {describe_error(exc, model)}") from None


def describe_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """`key.path: message (did you mean ...)` for the first error, and how many more."""
    errors = exc.errors(include_url=False)
    # an unknown key first: a misspelt key is also reported as the right key missing, and only
    # the unknown key's message can say which key was meant
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [part for part in first["loc"] if isinstance(part, int) or not _is_union_tag(part)]
    key = ".".join(str(part) for part in loc) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        allowed = allowed_keys(model, loc[:-1])
        message = f"unknown key{did_you_mean(str(loc[-1]), allowed)}" + (
            f" (allowed: {', '.join(allowed)})" if allowed else "")
    elif first["type"] in ("literal_error", "enum") and isinstance(first.get("input"), str):
        choices = re.findall(r"'([^']*)'", str((first.get("ctx") or {}).get("expected", "")))
        message += did_you_mean(first["input"], choices)
    more = exc.error_count() - 1
    return f"{key}: {message}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_union_tag(part) -> bool:
    """pydantic puts the tried type of a union in the location (`str`, `list[float]`, `MetricSpec`)."""
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part in ("str", "int", "float", "bool"))


def allowed_keys(model: type[BaseModel], loc: list) -> list[str]:
    """The field names of the model found at `loc` inside `model`."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if _is_model(current) else None
        if field is None:
            return []
        current = model_in(field.annotation)
    return field_names(current) if _is_model(current) else []


def field_names(model: type[BaseModel]) -> list[str]:
    """The model's keys as a reader expects them: its own fields first, then those it inherits
    (`GraftRecipe`'s target and vectors before the write options it shares with `extract`)."""
    own = [name for name in getattr(model, "__annotations__", {}) if name in model.model_fields]
    return own + [name for name in model.model_fields if name not in own]


def _is_model(value) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def model_in(annotation):
    """The BaseModel class inside an annotation (`Foo`, `list[Foo]`, `Foo | None`...), if any."""
    if _is_model(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def resolve_paths(config: BaseModel, root: Path, overridden: list[str], prefix: str = "") -> None:
    """Make relative PATH/MODEL fields relative to `root` (the YAML's folder), in place,
    except those set by `--set` (typed on the command line: relative to the current directory)."""
    for name, field in type(config).model_fields.items():
        value = getattr(config, name)
        key = f"{prefix}{name}"
        marker = next((m for m in field.metadata if isinstance(m, PathMarker)), None)
        if marker is not None and isinstance(value, str) and value and not _set_on_command_line(key, overridden):
            setattr(config, name, _resolved(value, root, marker))
        elif marker is not None and isinstance(value, list) and not _set_on_command_line(key, overridden):
            setattr(config, name, [_resolved(v, root, marker) if isinstance(v, str) and v else v for v in value])
        elif isinstance(value, BaseModel):
            resolve_paths(value, root, overridden, f"{key}.")
        elif isinstance(value, list):
            for index, entry in enumerate(value):
                if isinstance(entry, BaseModel):
                    resolve_paths(entry, root, overridden, f"{key}.{index}.")


def marked_values(config: BaseModel, prefix: str = "") -> list[tuple[str, PathMarker, object]]:
    """(dotted key, marker, value) of every PATH/MODEL field of `config`, nested sections
    included, a list field entry by entry (`vectors.0.base`)."""
    found = []
    for name, field in type(config).model_fields.items():
        value, key = getattr(config, name), f"{prefix}{name}"
        marker = next((m for m in field.metadata if isinstance(m, PathMarker)), None)
        listed = isinstance(value, list)
        for index, entry in enumerate(value if listed else [value]):
            where = f"{key}.{index}" if listed else key
            if marker is not None and not isinstance(entry, BaseModel):
                found.append((where, marker, entry))
            elif isinstance(entry, BaseModel):
                found += marked_values(entry, f"{where}.")
    return found


def named_files(config: BaseModel) -> dict[str, str]:
    """{dotted key: path} of every PATH/MODEL field of `config` that names an existing file (not
    a folder): the data, suites and prompts a run reads, whose content decides its result."""
    return {key: value for key, _, value in marked_values(config)
            if isinstance(value, str) and value and Path(value).is_file()}


def named_models(config: BaseModel) -> dict[str, str]:
    """{dotted key: reference} of every model a recipe names (MODEL fields that are set)."""
    return {key: value for key, marker, value in marked_values(config)
            if marker is MODEL and isinstance(value, str) and value}


def _set_on_command_line(key: str, overridden: list[str]) -> bool:
    return any(key == done or key.startswith(f"{done}.") for done in overridden)


def _resolved(value: str, root: Path, marker: PathMarker) -> str:
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = root / path
    if marker.kind == "file" or value.startswith(".") or candidate.exists():
        return str(candidate)
    return value  # a model reference that is not a folder here: a Hub id or `lab:NAME`
