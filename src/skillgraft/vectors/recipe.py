"""Graft recipes: a graft written down as one readable, copyable YAML file (`kind: graft`).

Every `graft` option is a key, declared once in `GraftRecipe` (config = signature, as in
litgpt: `skillgraft.signature` makes the options from the fields). The file
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
from skillgraft.clikit import FORCE_HELP
from skillgraft.signature import Cli
from skillgraft.vectors.methods import METHODS, WITH_DENSITY, density_problem

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


class Selection(BaseModel):
    """Which tensors an operation touches (extract, graft, to-lora)."""

    model_config = ConfigDict(extra="forbid")
    include: Annotated[list[str], Cli(metavar="REGEX")] = Field(
        default_factory=list, description="Only tensors whose names match (Python regex, repeatable).")
    exclude: Annotated[list[str], Cli(metavar="REGEX")] = Field(
        default_factory=list, description="Skip tensors whose names match (Python regex, repeatable); wins over "
                                          "--include.")


class Reading(BaseModel):
    """What an operation accepts as input when the checks would refuse it."""

    model_config = ConfigDict(extra="forbid")
    assume_vector: bool = Field(False, description="Take VECTOR folders as vectors even when their weights look "
                                                   "like a model's (vectors written by other tools).")
    assume_model: bool = Field(False, description="Take TARGET, BASE and SKILLED folders as models even when their "
                                                  "norm weights look like a delta's (norm scales stored as offsets "
                                                  "from 1).")
    allow_arch_mismatch: bool = Field(False, description="Combine models whose model_type or layer count differ.")
    allow_pickle: bool = Field(False, description="Read .bin weights (pickles) with torch.load(weights_only=True); "
                                                  "refused by default.")


class Writing(BaseModel):
    """How an operation that writes a checkpoint folder writes it."""

    model_config = ConfigDict(extra="forbid")
    shard_size: Annotated[Union[int, str], Cli(metavar="SIZE")] = Field("5GB", description="Largest safetensors shard of the output (5GB, 500MB, "
                                                           "2GiB).")
    force: bool = Field(False, description=FORCE_HELP)
    allow_nonfinite: bool = Field(False, description="Publish results holding NaN/Inf instead of refusing them.")


class GraftRecipe(Selection, Reading, Writing):
    """The keys of a graft recipe, and the options of `skillgraft graft` (`signature.options`):
    declared once here. `kind`, `target`, `vectors`, `output` and `schedule` are written
    differently on the command line (TARGET, VECTOR[:SCALE], --delta, -o, --scale-*)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["graft"] = "graft"
    target: Annotated[str, MODEL]
    vectors: list[VectorSpec] = Field(min_length=1)
    output: Annotated[str, PATH]
    method: Literal[METHODS] = Field("sum", description="How several vectors combine per tensor (peft's "
                                                       "semantics).")
    density: Optional[float] = Field(None, description=f"Kept fraction for {'/'.join(WITH_DENSITY)} (DARE drops "
                                                       "with p = 1 − density).")
    seed: int = Field(0, description="Seed of DARE's masks (per tensor, from the seed and the tensor name).")
    schedule: Optional[ScheduleSpec] = None
    with_embeddings: bool = Field(False, description="Also graft the input embeddings and output head; when "
                                  "vocabularies differ, rows are matched by token string and untrained chat-token "
                                  "rows get the chat model's rows (with --delta).")
    chat_template_from: Annotated[Optional[str], MODEL, Cli(metavar="MODEL")] = Field(
        None, description="Take the chat template (and the stop tokens it needs) from this model.")

    @field_validator("density")
    @classmethod
    def kept_fraction(cls, value):
        problem = density_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def schedule_spec(layers=(), modules=(), depth=None) -> ScheduleSpec | None:
    """The recipe's schedule from `graft`'s --scale-layers/--scale-modules/--scale-depth strings
    (checked now, errors naming those options); None when they scale nothing."""
    from skillgraft.vectors.schedule import build_schedule

    schedule = build_schedule(layers, modules, depth)
    if schedule.empty:
        return None
    return ScheduleSpec(layers=list(layers), modules=schedule.modules, depth=schedule.depth)


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
