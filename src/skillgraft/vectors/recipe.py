"""Graft recipes: a graft written down as one readable, copyable YAML file (`kind: graft`).

Every `graft` option has a key (the key is the function's parameter, as in litgpt). The file
is read by the project's one config loader (`skillgraft.config.load_config`): validated
before anything is read, `--set` for any key, paths relative to the recipe's folder. Vectors
are summed in the order the recipe lists them, saved vectors and base/skilled pairs alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skillgraft.config import MODEL, PATH, load_config
from skillgraft.errors import UserError
from skillgraft.vectors.methods import METHODS

Number = Union[float, list[float]]


class ScheduleSpec(BaseModel):
    """Per-tensor scale factors (see `skillgraft.vectors.schedule`)."""

    model_config = ConfigDict(extra="forbid")
    layers: Union[dict[str, float], list[str]] = Field(default_factory=dict)  # {"0-7": 0.5} or ["0-7=0.5"]
    modules: dict[str, Number] = Field(default_factory=dict)                   # {mlp: 0.5, attention: [0, 1]}
    depth: Optional[list[float]] = None                                        # [0.0, 0.5, 1.0]

    def build(self, key: str = "schedule"):
        """The Schedule (None when it scales nothing); errors name the recipe key."""
        from skillgraft.vectors.schedule import build_schedule

        rules = self.layers if isinstance(self.layers, list) else [f"{k}={v}" for k, v in self.layers.items()]
        modules = {k: v if isinstance(v, list) else [v] for k, v in self.modules.items()}
        schedule = build_schedule(rules, modules, self.depth,
                                  options=(f"{key}.layers", f"{key}.modules", f"{key}.depth"))
        return None if schedule.empty else schedule


class VectorSpec(BaseModel):
    """One skill: a saved vector (`path`) or a base/skilled pair computed on the fly."""

    model_config = ConfigDict(extra="forbid")
    path: Annotated[Optional[str], MODEL] = None
    base: Annotated[Optional[str], MODEL] = None
    skilled: Annotated[Optional[str], MODEL] = None
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
    target: Annotated[str, MODEL]
    vectors: list[VectorSpec] = Field(min_length=1)
    output: Annotated[str, PATH]
    method: Literal[METHODS] = "sum"
    density: Optional[float] = None
    seed: int = 0
    schedule: Optional[ScheduleSpec] = None
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    with_embeddings: bool = False
    assume_vector: bool = False
    assume_model: bool = False
    chat_template_from: Annotated[Optional[str], MODEL] = None
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


def load_recipe(path: str | Path, overrides: list[str] = ()) -> GraftRecipe:
    """Read, override and validate a recipe; schedules are parsed now, so a bad rule fails
    before any weights are read."""
    recipe = load_config(path, GraftRecipe, overrides, what="recipe")
    try:
        if recipe.schedule is not None:
            recipe.schedule.build()
        for index, spec in enumerate(recipe.vectors):
            if spec.schedule is not None:
                spec.schedule.build(f"vectors.{index}.schedule")
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return recipe


def graft_arguments(recipe: GraftRecipe) -> dict:
    """The keyword arguments of `skillgraft.vectors.graft` for this recipe (without output)."""
    from skillgraft.checkpoint import parse_size

    sources = [(spec.path,) if spec.path is not None else (spec.base, spec.skilled) for spec in recipe.vectors]
    return dict(
        sources=[(*source, spec.scale) for source, spec in zip(sources, recipe.vectors)],
        source_schedules=[spec.schedule.build() if spec.schedule is not None else None for spec in recipe.vectors],
        include=recipe.include, exclude=recipe.exclude, with_embeddings=recipe.with_embeddings,
        assume_vector=recipe.assume_vector, assume_model=recipe.assume_model,
        allow_arch_mismatch=recipe.allow_arch_mismatch,
        allow_nonfinite=recipe.allow_nonfinite, allow_pickle=recipe.allow_pickle,
        shard_size=parse_size(recipe.shard_size), chat_template_from=recipe.chat_template_from,
        method=recipe.method, density=recipe.density, seed=recipe.seed,
        schedule=recipe.schedule.build() if recipe.schedule is not None else None)
