"""`skillgraft run FILE`: any recipe file, dispatched on its `kind` (graft, train or sweep).

Each kind is the same pydantic model its own verb uses (`vectors.recipe.GraftRecipe`,
`train.config.TrainConfig`, `sweep.config.SweepConfig`), read by the one config loader, so a
file that `run` accepts means exactly what the verb would do with the same options.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from skillgraft.clikit import emit_json
from skillgraft.config import kind_of, read_yaml, recipe_loader
from skillgraft.errors import UserError


def recipe_kind(path: str | Path) -> str:
    return kind_of(read_yaml(path, "recipe"), str(path))


def load_recipe_file(path: str | Path, overrides: list[str]) -> BaseModel:
    """The file read by its kind's own loader (`config.RECIPE_KINDS`)."""
    return recipe_loader(recipe_kind(path))(path, overrides)


def run_sweep_file(path: str | Path, overrides: list[str], *, out: str | None, as_json: bool,
                   quiet: bool = False) -> dict:
    """A sweep file run as `skillgraft sweep run FILE -o OUT` with its defaults (one worker,
    the config's n_trials, SQLite in OUT); rerunning continues the study."""
    if not out:
        raise UserError(f"{path}: a sweep needs -o DIR (its study, trials and report go there)")
    from skillgraft.sweep.cli import print_summary, summary
    from skillgraft.sweep.workers import run_sweep

    study, url = run_sweep(str(path), list(overrides), Path(out), storage=None, name=None, n_trials=None,
                           workers=1, timeout=None, keep=False, new=False, quiet=quiet)
    result = summary(study, Path(out), url)
    emit_json(result) if as_json else print_summary(result)
    return result


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

    if out:  # relative to the current directory, recorded whole (as `train -o`)
        recipe.output_dir = str(Path(out).resolve())
    if quiet:  # as `train --quiet`
        recipe.progress = False
    summary = train(recipe, force=force)
    print_summary(summary, as_json)
    return summary
