"""The sweep config (`kind: sweep`): a base recipe, a search space over its dotted keys,
objectives, constraints, a sampler and a seed.

Read by the project's one loader (`skillgraft.config`): pydantic validation, `--set` for any
key, paths relative to the YAML. The base recipe is a graft recipe or a training config,
inline or by path; every key of the space is checked against that recipe's own pydantic
model before a trial runs, so a typo fails at once with the valid keys and the closest match.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, model_validator

from skillgraft.config import NAMED, PATH, did_you_mean, kind_of, load_config, read_yaml, recipe_model
from skillgraft.errors import UserError
from skillgraft.sweep.space import (
    Bool, Categorical, Distribution, FloatRange, IntRange, LayerScales, Scales, Strict, Subset, grid, overrides,
)


class Measure(Strict):
    """A number taken from a trial's output: a suite's `{suite, set, metric}` score, or a
    named measure (`skillgraft.sweep.measures.registry`) with its options."""

    suite: Annotated[str | None, NAMED] = None  # a suite YAML (relative to this file) or a built-in name
    set: str | None = None
    metric: str | None = None
    measure: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self):
        from_suite = (self.suite, self.set, self.metric)
        if self.measure is None and None in from_suite:
            raise ValueError("give suite, set and metric (an evaluation score) or measure (a named measure)")
        if self.measure is not None and any(v is not None for v in from_suite):
            raise ValueError("give either measure or suite/set/metric, not both")
        return self

    @property
    def name(self) -> str:
        return self.measure or f"{self.suite}/{self.set}/{self.metric}"


class Objective(Measure):
    direction: Literal["maximize", "minimize"] = "maximize"


class Constraint(Measure):
    """Feasible when min ≤ value ≤ max (Optuna's constraints: value ≤ 0 is feasible)."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bound(self):
        if self.min is None and self.max is None:
            raise ValueError("a constraint needs min or max")
        return self


class Sampler(Strict):
    name: Literal["tpe", "nsga2", "gp", "random", "grid"] = "tpe"
    options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of the Optuna sampler


class Pruner(Strict):
    name: Literal["median", "percentile", "hyperband", "successive_halving", "threshold"]
    options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of the Optuna pruner


class SweepConfig(Strict):
    kind: Literal["sweep"] = "sweep"
    base: Annotated[Union[str, dict[str, Any]], PATH]   # a path relative to this file, or the recipe inline
    set: dict[str, Any] = Field(default_factory=dict)   # base keys fixed for this sweep, as `--set` would
    space: dict[str, Distribution] = Field(min_length=1)
    objectives: list[Objective] = Field(min_length=1)
    constraints: list[Constraint] = Field(default_factory=list)
    sampler: Sampler = Field(default_factory=Sampler)
    pruner: Pruner | None = None
    seed: int = 0
    enqueue: list[dict[str, Any]] = Field(default_factory=list)  # parameters to try first (Optuna's enqueue_trial)
    n_trials: int = Field(20, ge=1)
    heartbeat: int = Field(10, ge=1)  # seconds between a running trial's heartbeats; stale after 3
    batch_size: int = Field(8, ge=1)  # prompts per batch when a trial's suites are scored (as `eval --batch-size`)


@dataclass
class Sweep:
    """A validated sweep: the config, the base recipe's raw tree and the folder its relative
    paths are relative to, and the recipe's pydantic model."""

    config: SweepConfig
    source: str
    base_tree: dict
    base_root: Path
    recipe_kind: str                  # graft or train
    recipe_model: type[BaseModel]

    def recipe(self, values: dict, output: str | Path) -> BaseModel:
        """The base recipe with `values` ({dotted key: value}) applied as `--set` overrides, and its
        output set to `output`; relative paths are read from the base recipe's folder and
        written absolute."""
        from skillgraft.config import apply_override, resolve_paths, validate

        tree = copy.deepcopy(self.base_tree)
        where = f"{self.source}: base"
        for item in overrides(values):
            apply_override(tree, item, where)
        out_key = "output" if self.recipe_kind == "graft" else "output_dir"
        tree[out_key] = str(Path(output).resolve())
        if self.recipe_kind == "train":
            tree["progress"] = False
            tree["merge"] = True   # objectives load a plain model folder (merged LoRA, or the full model)
        recipe = validate(tree, self.recipe_model, where)
        resolve_paths(recipe, self.base_root, [out_key])
        if self.recipe_kind == "graft":
            for index, spec in enumerate([recipe, *recipe.vectors]):
                if spec.schedule is not None:
                    spec.schedule.build("schedule" if index == 0 else f"vectors.{index - 1}.schedule")
        return recipe


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read and check a sweep config; every problem is one UserError naming the key."""
    config = load_config(path, SweepConfig, overrides, what="sweep config")
    source = str(path)
    # the base's folder made absolute: a trial's recipe.yaml then names its files absolutely and
    # `skillgraft run TRIAL/recipe.yaml` rebuilds it from any folder (relative paths in a recipe
    # are read from the recipe's own folder, which is not where the sweep ran)
    if isinstance(config.base, str):
        base_tree, base_root = read_yaml(config.base, "base recipe"), Path(config.base).parent.resolve()
    else:
        base_tree, base_root = copy.deepcopy(config.base), Path(path).parent.resolve()
    sweep = Sweep(config, source, base_tree, base_root, *_recipe_model(base_tree, source))
    _apply_set(sweep)
    check_space(sweep)
    check_objectives(sweep)
    check_values(sweep)
    check_enqueued(sweep)
    return sweep


def load_sweep_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """A sweep file read and checked as `sweep run` reads it (for `run FILE`)."""
    return load_sweep(path, overrides).config


def _apply_set(sweep: Sweep) -> None:
    """Fix the `set:` keys in the base (a shipped recipe swept with a few keys of this sweep's own,
    e.g. `mixed_precision: auto`); a key the recipe does not have is refused like a space key."""
    from skillgraft.config import apply_override

    valid = recipe_keys(sweep.recipe_model, sweep.base_tree)
    for key, item in zip(sweep.config.set, overrides(sweep.config.set)):
        if key not in valid:
            raise UserError(f"{sweep.source}: set.{key}: not a key of the base {sweep.recipe_kind} recipe"
                            f"{did_you_mean(key, valid)}")
        if key in sweep.config.space:
            raise UserError(f"{sweep.source}: set.{key}: also in space; a key is either fixed or searched")
        apply_override(sweep.base_tree, item, f"{sweep.source}: set")


def _recipe_model(tree: dict, source: str) -> tuple[str, type[BaseModel]]:
    """The base recipe's kind, read as `skillgraft run` reads it, and its pydantic model."""
    kind = kind_of(tree, f"{source}: base", ("graft", "train"))
    return kind, recipe_model(kind)


def recipe_keys(model: type[BaseModel], tree: dict, prefix: str = "") -> list[str]:
    """Every dotted key of a recipe: its fields, nested sections, and the entries of lists of
    sections that the base recipe has (`vectors.0.scale`)."""
    from skillgraft.config import field_names, model_in

    keys = []
    for name in field_names(model):
        field = model.model_fields[name]
        key = f"{prefix}{name}"
        keys.append(key)
        inner = model_in(field.annotation)
        value = tree.get(name) if isinstance(tree, dict) else None
        if inner is None:
            continue
        if isinstance(value, list):
            for index, entry in enumerate(value):
                keys += recipe_keys(inner, entry if isinstance(entry, dict) else {}, f"{key}.{index}.")
        else:
            keys += recipe_keys(inner, value if isinstance(value, dict) else {}, f"{key}.")
    return keys


def check_space(sweep: Sweep) -> None:
    """Unknown keys (with the valid ones and the closest), empty or inverted ranges."""
    config = sweep.config
    valid = recipe_keys(sweep.recipe_model, sweep.base_tree)
    for key, dist in config.space.items():
        where = f"{sweep.source}: space.{key}"
        if key not in valid:
            raise UserError(f"{where}: not a key of the base {sweep.recipe_kind} recipe"
                            f"{did_you_mean(key, valid)} (valid keys: {', '.join(valid)})")
        if isinstance(dist, (FloatRange, IntRange, Scales)):
            if dist.low > dist.high or (dist.low == dist.high and not isinstance(dist, IntRange)):
                raise UserError(f"{where}: the range [{dist.low}, {dist.high}] is "
                                f"{'inverted' if dist.low > dist.high else 'empty'}; give low < high")
            if getattr(dist, "log", False) and dist.low <= 0:
                raise UserError(f"{where}: a log range needs low > 0 (got {dist.low})")
        part = "layers" if isinstance(dist, LayerScales) else "modules"
        if isinstance(dist, Scales) and key.rsplit(".", 1)[-1] != part:
            raise UserError(f"{where}: {dist.type} sets a schedule's `{part}` (e.g. schedule.{part})")
    keys = list(config.space)
    for index, (key, dist) in enumerate(config.space.items()):
        for other, allowed in (dist.when or {}).items():
            where = f"{sweep.source}: space.{key}.when.{other}"
            source = config.space.get(other)
            if other not in keys[:index]:
                raise UserError(f"{where}: a condition names an earlier key of the space"
                                f"{did_you_mean(other, keys[:index])} (earlier keys: {', '.join(keys[:index]) or 'none'})")
            if not isinstance(source, (Categorical, Bool)):
                raise UserError(f"{where}: a condition needs a categorical or bool key")
            known = source.choices if isinstance(source, Categorical) else [False, True]
            stray = [v for v in allowed if v not in known]
            if stray or not allowed:
                raise UserError(f"{where}: {stray[0] if stray else 'no value'} is not a choice of {other} "
                                f"(choices: {', '.join(map(str, known))})")
    if config.sampler.name == "grid" and any(dist.when for dist in config.space.values()):
        raise UserError(f"{sweep.source}: the grid sampler needs every parameter in every trial; remove `when`")
    if config.sampler.name == "grid":
        for key, dist in config.space.items():
            if isinstance(dist, (FloatRange, Scales)) and dist.step is None:
                raise UserError(f"{sweep.source}: space.{key}: the grid sampler needs a `step` for float ranges")
    multi = len(config.objectives) > 1
    if config.pruner is not None and multi:
        raise UserError(f"{sweep.source}: pruner: Optuna does not prune multi-objective studies "
                        f"({len(config.objectives)} objectives); remove `pruner` or keep one objective")
    if config.pruner is not None and sweep.recipe_kind != "train":
        raise UserError(f"{sweep.source}: pruner: only training trials report intermediate values "
                        "(the retention monitor's); a graft trial has none to prune on")


def check_objectives(sweep: Sweep) -> None:
    """Every suite, set and metric named exists; every named measure exists."""
    from skillgraft.sweep.measures import registry

    measures = registry()
    for section, entries in (("objectives", sweep.config.objectives), ("constraints", sweep.config.constraints)):
        for index, entry in enumerate(entries):
            where = f"{sweep.source}: {section}.{index}"
            if entry.measure is not None:
                if entry.measure not in measures:
                    raise UserError(f"{where}.measure: {entry.measure!r} is not a named measure"
                                    f"{did_you_mean(entry.measure, list(measures))} (named measures: "
                                    f"{', '.join(measures)})")
                _check_options(entry, measures[entry.measure], where)
                continue
            _check_suite_metric(entry, where)


def _check_options(entry: Measure, measure, where: str) -> None:
    import inspect

    allowed = [name for name in inspect.signature(measure).parameters][2:]
    for name in entry.options:
        if name not in allowed:
            raise UserError(f"{where}.options.{name}: not an option of {entry.measure}{did_you_mean(name, allowed)} "
                            f"(options: {', '.join(allowed) or 'none'})")


def _check_suite_metric(entry: Measure, where: str) -> None:
    from skillgraft.evaluate.suites import load_suite

    try:
        suite = load_suite(entry.suite)
    except UserError as exc:
        raise UserError(f"{where}.suite: {exc}") from None
    sets = {s.name: s for s in suite.sets}
    if entry.set not in sets:
        raise UserError(f"{where}.set: suite {entry.suite!r} has no set {entry.set!r}"
                        f"{did_you_mean(entry.set, list(sets))} (sets: {', '.join(sets)})")
    from skillgraft.evaluate.metrics import score_keys

    keys = [key for spec in sets[entry.set].metrics for key in score_keys(spec)]
    if entry.metric not in keys:
        raise UserError(f"{where}.metric: set {entry.set!r} of suite {entry.suite!r} gives no score "
                        f"{entry.metric!r}{did_you_mean(entry.metric, keys)} (scores: {', '.join(keys)})")


def check_values(sweep: Sweep) -> None:
    """Materialise the recipe at both ends of every range and with every choice, so a value the
    recipe refuses (`lora.r: 0`, a bad layer rule) fails now, not in the middle of a sweep."""
    for key, dist in sweep.config.space.items():
        if isinstance(dist, Categorical):
            candidates = dist.choices
        elif isinstance(dist, Bool):
            candidates = [False, True]
        elif isinstance(dist, Subset):
            candidates = [list(dist.choices)]
        elif isinstance(dist, Scales):
            candidates = [{name: dist.low for name in dist.names}, {name: dist.high for name in dist.names}]
        else:
            candidates = [dist.low, dist.high]
        condition = {other: allowed[0] for other, allowed in (dist.when or {}).items()}
        for value in candidates:
            try:
                sweep.recipe({**condition, key: value}, "check")
            except UserError as exc:
                raise UserError(f"{sweep.source}: space.{key}: the value {value!r} is refused by the base recipe: "
                                f"{str(exc).removeprefix(sweep.source + ': base: ')}") from None


def check_inputs(sweep: Sweep) -> None:
    """The models the base recipe names resolve and (training) its data and prompt files read,
    with every choice a categorical key offers (`data.train: [k5, k5-qa]`): a missing model or
    a bad file is one error before the study folder is made, not the same failure in every
    trial. Run by `sweep run`, not on load: a report reads a finished study without its models."""
    from skillgraft.checkpoint.resolve import resolve_model
    from skillgraft.config import named_models

    points = [{}] + [{key: choice} for key, dist in sweep.config.space.items() if isinstance(dist, Categorical)
                     for choice in dist.choices]
    seen = set()
    for point in points:
        condition = {other: allowed[0] for key in point for other, allowed in
                     (sweep.config.space[key].when or {}).items()}
        recipe = sweep.recipe({**condition, **point}, "check")
        where = f"{sweep.source}: base" + "".join(f" ({key}: {value})" for key, value in point.items())
        try:
            for key, spec in named_models(recipe).items():
                if spec not in seen:
                    resolve_model(spec, key)
                    seen.add(spec)
            if sweep.recipe_kind == "train":
                from skillgraft.train.dataset import check_data
                from skillgraft.train.keep import check_options

                check_options(recipe)
                check_data(recipe)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None


def check_enqueued(sweep: Sweep) -> None:
    """Enqueued points name parameters of the space (`vectors.0.scale`, `schedule.layers[0-0]`)."""
    names = list(grid(sweep.config.space, steps_only=False))
    for index, point in enumerate(sweep.config.enqueue):
        for name in point:
            if name not in names:
                raise UserError(f"{sweep.source}: enqueue.{index}: {name!r} is not a parameter of the space"
                                f"{did_you_mean(name, names)} (parameters: {', '.join(names)})")
