"""`skillgraft run RECIPE.yaml`: a graft written down as one readable, copyable YAML file.

Every `graft` option has a key (the key is the function's parameter, as in litgpt); the
file is validated with pydantic before anything is read, and a bad key or value is named
in the one `error:` line (`recipe.yaml: vectors.1.scale: Input should be a valid number`).
`--set KEY=VALUE` overrides any key, dotted for nested ones (`--set vectors.0.base=PATH`),
so a shipped recipe runs on your own folders without editing it. Relative paths are
relative to the current directory, as on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skillgraft.errors import UserError

Number = Union[float, list[float]]


class ScheduleSpec(BaseModel):
    """Per-tensor scale factors (see `skillgraft.vectors.schedule`)."""

    model_config = ConfigDict(extra="forbid")
    layers: Union[dict[str, float], list[str]] = Field(default_factory=dict)  # {"0-7": 0.5} or ["0-7=0.5"]
    modules: dict[str, Number] = Field(default_factory=dict)                   # {mlp: 0.5, attention: [0, 1]}
    depth: Optional[list[float]] = None                                        # [0.0, 0.5, 1.0]

    def build(self, key: str = "schedule"):
        """The Schedule; errors name the recipe key (e.g. `schedule.modules`)."""
        from skillgraft.vectors.schedule import build_schedule

        rules = self.layers if isinstance(self.layers, list) else [f"{k}={v}" for k, v in self.layers.items()]
        modules = {k: v if isinstance(v, list) else [v] for k, v in self.modules.items()}
        schedule = build_schedule(rules, modules, self.depth,
                                  options=(f"{key}.layers", f"{key}.modules", f"{key}.depth"))
        return None if schedule.empty else schedule


class VectorSpec(BaseModel):
    """One skill: a saved vector (`path`) or a base/skilled pair computed on the fly."""

    model_config = ConfigDict(extra="forbid")
    path: Optional[str] = None
    base: Optional[str] = None
    skilled: Optional[str] = None
    scale: float = 1.0
    schedule: Optional[ScheduleSpec] = None

    @model_validator(mode="after")
    def one_kind(self) -> "VectorSpec":
        pair = self.base is not None or self.skilled is not None
        if self.path is not None and pair:
            raise ValueError("give either path (a saved vector) or base + skilled, not both")
        if self.path is None and (self.base is None or self.skilled is None):
            raise ValueError("give path (a saved vector) or both base and skilled")
        return self


class GraftRecipe(BaseModel):
    """The keys of a graft recipe; each is a `skillgraft graft` option."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["graft"] = "graft"
    target: str
    vectors: list[VectorSpec] = Field(min_length=1)
    output: str
    method: Literal["sum", "ties", "dare", "dare_ties", "magnitude"] = "sum"
    density: Optional[float] = None
    seed: int = 0
    schedule: Optional[ScheduleSpec] = None
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    with_embeddings: bool = False
    chat_template_from: Optional[str] = None
    shard_size: Union[int, str] = "5GB"
    force: bool = False
    allow_arch_mismatch: bool = False
    allow_nonfinite: bool = False
    allow_pickle: bool = False

    @field_validator("density")
    @classmethod
    def kept_fraction(cls, value):
        if value is not None and not 0 < value <= 1:
            raise ValueError("density is the kept fraction: a number in (0, 1]")
        return value


def _set(tree: dict, dotted: str, value, source: str) -> None:
    """Apply one `--set a.b.0.c=value` to the raw YAML tree."""
    keys = dotted.split(".")
    node = tree
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) > len(node):
                raise UserError(f"{source}: --set {dotted}: {key!r} is not an index of that list (0..{len(node) - 1})")
            index = int(key)
            if index == len(node):
                node.append({})
            if last:
                node[index] = value
            node = node[index]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, [] if keys[depth + 1].isdigit() else {})
        else:
            raise UserError(f"{source}: --set {dotted}: {'.'.join(keys[:depth])} is not a mapping or list")


def load_recipe(path: str | Path, overrides: list[str] = ()) -> GraftRecipe:
    """Read, override and validate a recipe; every problem is one UserError naming the key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe {path} does not exist")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise UserError(f"{path}: not valid YAML{line}") from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise UserError(f"{path}: a recipe is a mapping of keys (target, vectors, output, ...)")
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise UserError(f"--set {override!r}: expected KEY=VALUE, e.g. --set target=models/cp")
        _set(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None, str(path))
    try:
        recipe = GraftRecipe.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = f"unknown key (allowed: {', '.join(_allowed(first['loc']))})"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise UserError(f"{path}: {key}: {message}{more}") from None
    try:  # schedules parse their rules now, so a bad rule fails before any work
        if recipe.schedule is not None:
            recipe.schedule.build()
        for index, spec in enumerate(recipe.vectors):
            if spec.schedule is not None:
                spec.schedule.build(f"vectors.{index}.schedule")
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return recipe


def _allowed(loc: tuple) -> list[str]:
    model = GraftRecipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        for candidate in (VectorSpec, ScheduleSpec):
            if candidate.__name__ in str(annotation):
                model = candidate
    return list(model.model_fields)


def run_recipe(recipe: GraftRecipe, *, quiet: bool = True, output: str | None = None, force: bool | None = None) -> dict:
    """Carry out a validated recipe with `skillgraft.vectors.graft`."""
    from skillgraft.checkpoint import parse_size
    from skillgraft.vectors import graft

    vectors, deltas = [], []
    for spec in recipe.vectors:
        if spec.path is not None:
            vectors.append((spec.path, spec.scale))
    for spec in recipe.vectors:
        if spec.path is None:
            deltas.append((spec.base, spec.skilled, spec.scale))
    # graft() takes saved vectors first, then pairs: keep each vector's own schedule in that order
    ordered = [s for s in recipe.vectors if s.path is not None] + [s for s in recipe.vectors if s.path is None]
    schedules = [s.schedule.build() if s.schedule is not None else None for s in ordered]
    return graft(
        recipe.target, output or recipe.output, vectors=vectors, deltas=deltas, include=recipe.include,
        exclude=recipe.exclude, with_embeddings=recipe.with_embeddings,
        force=recipe.force if force is None else force, quiet=quiet, allow_arch_mismatch=recipe.allow_arch_mismatch,
        allow_nonfinite=recipe.allow_nonfinite, allow_pickle=recipe.allow_pickle,
        shard_size=parse_size(recipe.shard_size), chat_template_from=recipe.chat_template_from,
        method=recipe.method, density=recipe.density, seed=recipe.seed,
        schedule=recipe.schedule.build() if recipe.schedule is not None else None, source_schedules=schedules)
