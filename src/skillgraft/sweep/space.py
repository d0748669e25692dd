"""The search space: its distributions (the `space` entries of a sweep config), and the way
from them to Optuna parameters and back to recipe keys.

A trial's parameters are named by the recipe's dotted keys (`vectors.0.scale`, `lora.r`);
a `layer_scales` entry becomes one parameter per range (`schedule.layers[0-1]`), a
`module_scales` entry one per module kind (`schedule.modules[attention]`), a `subset`
one yes/no parameter per choice (`lora.targets[q]`). The values
go back into the recipe as `KEY=VALUE` overrides, the `--set` of every other verb, so a
string choice is read as YAML like a `--set` value (`"[embed_tokens, lm_head]"` is a list).
Optuna's categorical choices must be scalars; list or mapping choices are passed to it as
their JSON text, which is also YAML.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Parameter(Strict):
    """`when: {KEY: [values]}`: the parameter exists only in trials where the earlier space key
    KEY took one of these values (Optuna's conditional, define-by-run parameters): a merge
    method's `density` only when the method is ties or dare_ties."""

    when: dict[str, list[Any]] | None = None


class FloatRange(Parameter):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)


class IntRange(Parameter):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)


class Categorical(Parameter):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)


class Bool(Parameter):
    type: Literal["bool"]


class Subset(Parameter):
    """Which of `choices` a list key holds, one yes/no parameter each (seed 003's per-module
    LoRA placement: `lora.targets` from q, k, v, o, gate, up, down, lm_head)."""

    type: Literal["subset"]
    choices: list[str] = Field(min_length=1)


class Scales(Parameter):
    """One scale per named part of a graft schedule, each its own parameter in [low, high]."""

    low: float
    high: float
    step: float | None = Field(None, gt=0)

    @property
    def names(self) -> list[str]:
        raise NotImplementedError


class LayerScales(Scales):
    """One scale per layer range (`schedule.layers` of a graft recipe): `{"0-1": s, "2-3": s'}`."""

    type: Literal["layer_scales"]
    ranges: list[str] = Field(min_length=1)

    @property
    def names(self) -> list[str]:
        return self.ranges


class ModuleScales(Scales):
    """One scale per module kind (`schedule.modules`): `{"attention": s}` multiplies the layer's
    scale on attention tensors (docs/vectors.md "Schedules")."""

    type: Literal["module_scales"]
    kinds: list[Literal["attention", "mlp", "norm", "embedding", "other"]] = Field(min_length=1)

    @property
    def names(self) -> list[str]:
        return list(self.kinds)


Distribution = Annotated[Union[FloatRange, IntRange, Categorical, Bool, Subset, LayerScales, ModuleScales],
                         Field(discriminator="type")]


_ABSENT = object()


def _range_name(key: str, span: str) -> str:
    return f"{key}[{span}]"


def suggest(trial, space: dict) -> dict:
    """Ask `trial` for every parameter; returns {recipe key: value}."""
    values = {}
    for key, dist in space.items():
        if any(values.get(other, _ABSENT) not in allowed for other, allowed in (dist.when or {}).items()):
            continue   # a conditional parameter whose condition this trial does not meet
        if isinstance(dist, FloatRange):
            values[key] = trial.suggest_float(key, dist.low, dist.high, log=dist.log, step=dist.step)
        elif isinstance(dist, IntRange):
            values[key] = trial.suggest_int(key, dist.low, dist.high, log=dist.log, step=dist.step)
        elif isinstance(dist, Categorical):
            values[key] = trial.suggest_categorical(key, choices(dist))
        elif isinstance(dist, Bool):
            values[key] = trial.suggest_categorical(key, [False, True])
        elif isinstance(dist, Subset):
            values[key] = [c for c in dist.choices if trial.suggest_categorical(_range_name(key, c), [False, True])]
        elif isinstance(dist, Scales):
            values[key] = {name: trial.suggest_float(_range_name(key, name), dist.low, dist.high, step=dist.step)
                           for name in dist.names}
    return values


def choices(dist: Categorical) -> list:
    return [c if c is None or isinstance(c, (bool, int, float, str)) else json.dumps(c) for c in dist.choices]


def grid(space: dict, steps_only: bool = True) -> dict[str, list]:
    """The grid sampler's search space: every parameter's values (float ranges need `step`;
    with `steps_only=False` a range without one gives its two ends, for listing the names)."""
    import numpy as np

    def steps(low, high, step):
        if step is None and not steps_only:
            return [low, high]
        return [round(float(v), 10) for v in np.arange(low, high + step / 2, step)]

    out = {}
    for key, dist in space.items():
        if isinstance(dist, FloatRange):
            out[key] = steps(dist.low, dist.high, dist.step)
        elif isinstance(dist, IntRange):
            out[key] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, Categorical):
            out[key] = choices(dist)
        elif isinstance(dist, Bool):
            out[key] = [False, True]
        elif isinstance(dist, Subset):
            out.update({_range_name(key, c): [False, True] for c in dist.choices})
        elif isinstance(dist, Scales):
            out.update({_range_name(key, name): steps(dist.low, dist.high, dist.step) for name in dist.names})
    return out


def overrides(values: dict) -> list[str]:
    """`KEY=VALUE` strings for `skillgraft.config.apply_override`: strings as written (YAML, like
    `--set`), other values as JSON (which is YAML)."""
    return [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in values.items()]
