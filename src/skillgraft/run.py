"""`skillgraft run FILE`: any recipe file, dispatched on its `kind` (graft or train).

Each kind is the same pydantic model its own verb uses (`vectors.recipe.GraftRecipe`,
`train.config.TrainConfig`), read by the one config loader, so a file that `run` accepts
means exactly what the verb would do with the same options.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel

from skillgraft.config import read_yaml
from skillgraft.errors import UserError

KINDS = ("graft", "train")


def recipe_kind(path: str | Path) -> str:
    """The file's `kind`; without one, a file with `target` is a graft, with `model` a training config."""
    tree = read_yaml(path, "recipe")
    kind = tree.get("kind")
    if kind is None:
        kind = "graft" if "target" in tree else "train" if "model" in tree else None
    if kind not in KINDS:
        raise UserError(f"{path}: kind: {kind!r} is not one of {', '.join(KINDS)} "
                        "(a graft recipe has `target` and `vectors`; a training config has `model` and `data`)")
    return kind


def load_recipe_file(path: str | Path, overrides: list[str]) -> BaseModel:
    if recipe_kind(path) == "graft":
        from skillgraft.vectors.recipe import load_recipe

        return load_recipe(path, overrides)
    from skillgraft.train.config import load_train_config

    return load_train_config(path, overrides)


def run_recipe_file(recipe: BaseModel, *, out: str | None, force: bool, quiet: bool, as_json: bool) -> dict:
    """Carry out a loaded recipe and print its result as its own verb would."""
    if recipe.kind == "graft":
        from skillgraft.vectors import graft
        from skillgraft.vectors.cli import report
        from skillgraft.vectors.recipe import graft_arguments

        result = graft(recipe.target, out or recipe.output, force=force or recipe.force, quiet=quiet,
                       **graft_arguments(recipe))
        report("model", result, as_json, quiet)
        return result
    from skillgraft.train.cli import print_summary
    from skillgraft.train.run import train

    if out:
        recipe.output_dir = out
    if force:
        print("note: --force has no effect on a training run (it writes its own output_dir)", file=sys.stderr)
    summary = train(recipe)
    print_summary(summary, as_json)
    return summary
