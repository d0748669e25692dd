"""One trial: materialise the recipe, run it (graft or training), evaluate it, write its folder.

    DIR/trials/NNNN/recipe.yaml     the exact recipe; `skillgraft run` on it rebuilds the output
    DIR/trials/NNNN/output/         the grafted model, or the training run's folder (deleted when
                                    the trial is neither best nor on the Pareto front, unless --keep)
    DIR/trials/NNNN/result.json     parameters, objective and constraint values, seconds, state
    DIR/trials/NNNN/skillgraft.json the manifest of what the trial wrote

The recipe is written before anything runs, so even a trial that failed or was pruned can be
rebuilt with one command.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
from pathlib import Path

import yaml

from skillgraft.checkpoint.publish import write_file_atomic
from skillgraft.sweep.config import Sweep
from skillgraft.sweep.folders import finish, rebuild_command, trial_dir
from skillgraft.sweep.results import worth_keeping
from skillgraft.sweep.space import suggest


def evaluate(entries, model_dir, recipe, batch_size: int = 8) -> list[float]:
    """The value of every objective or constraint for the model in `model_dir` (a folder, or an
    in-memory trial's evaluation backend); a suite runs once however many of its scores are
    asked for. A score the suite leaves empty is NaN. `batch_size` changes speed only."""
    from skillgraft.evaluate.runner import run_suite
    from skillgraft.evaluate.suites import load_suite
    from skillgraft.sweep.measures import registry

    suites: dict[str, dict] = {}
    values = []
    for entry in entries:
        if entry.measure is not None:
            values.append(float(registry()[entry.measure](model_dir, recipe, **entry.options)))
            continue
        if entry.suite not in suites:
            # only the sets an objective or constraint names: a suite's held-out set is never
            # even computed during the search; kept / general_kl compare with the model the
            # recipe started from
            suite = load_suite(entry.suite)
            named = {e.set for e in entries if e.measure is None and e.suite == entry.suite}
            suite.sets = [s for s in suite.sets if s.name in named]
            start = recipe.target if recipe.kind == "graft" else recipe.model
            suites[entry.suite] = run_suite({"trial": model_dir}, suite, reference=start,
                                            batch_size=batch_size, log=None)["scores"]["trial"]
        value = suites[entry.suite].get(entry.set, {}).get(entry.metric)
        values.append(math.nan if value is None else float(value))
    return values


def constraint_values(constraints, values: list[float]) -> list[float]:
    """Optuna's convention: ≤ 0 is feasible."""
    out = []
    for spec, value in zip(constraints, values):
        worst = max((spec.min - value) if spec.min is not None else -math.inf,
                    (value - spec.max) if spec.max is not None else -math.inf)
        out.append(float(worst))
    return out


def _run_recipe(recipe, sweep: Sweep, on_probe):
    """Carry out the recipe: `(model, publish)`, the model to evaluate (a folder, or a graft
    applied in memory to the worker's warm target) and, for the latter, the function that
    writes its folder when the trial is kept."""
    if sweep.recipe_kind == "graft":
        from skillgraft.sweep.warm import graft_trial

        return graft_trial(recipe)
    from skillgraft.train.run import train

    summary = train(recipe, on_probe=on_probe)
    shutil.rmtree(Path(recipe.output_dir) / "checkpoints", ignore_errors=True)  # Trainer's working state
    return summary["merged_dir"] or summary["model_dir"], None


def _pruning_reporter(trial):
    """Report the training monitor's retention to Optuna; stop the run when the pruner says so."""
    import optuna

    def on_probe(record: dict) -> None:
        if record.get("retention") is None:
            return
        trial.report(record["retention"], record["step"])
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {record['step']} (retention {record['retention']:.3f})")
    return on_probe


def machine_failure(exc: BaseException) -> bool:
    """Whether the machine, not the trial's recipe, failed it (a full disk, memory): the same
    parameters can succeed once that is fixed, so the sweep queues them again and stops."""
    from skillgraft.checkpoint.publish import DISK_FULL
    from skillgraft.errors import MachineError

    return isinstance(exc, (MachineError, MemoryError)) or (isinstance(exc, OSError) and exc.errno in DISK_FULL)


def run_trial(trial, sweep: Sweep, out: Path, keep: bool = False) -> list[float] | float:
    """Optuna's objective for one trial (values in the order of `objectives`). An in-memory
    graft trial writes its folder only when `keep` or when it is best / on the front so far."""
    import optuna

    config = sweep.config
    folder = trial_dir(out, trial.number)
    folder.mkdir(parents=True, exist_ok=True)
    trial.set_user_attr("trial", {"dir": str(folder), "host": f"{socket.gethostname()}:{os.getpid()}"})
    values = suggest(trial, config.space)
    recipe = sweep.recipe(values, folder / "output")
    write_file_atomic(folder / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    record = {"number": trial.number, "params": trial.params, "recipe": values, "rebuild": rebuild_command(folder)}
    start = time.perf_counter()
    try:
        on_probe = _pruning_reporter(trial) if config.pruner is not None else None
        model, publish = _run_recipe(recipe, sweep, on_probe)
        ran = time.perf_counter()
        scores = evaluate([*config.objectives, *config.constraints], model, recipe, config.batch_size)
    except optuna.TrialPruned as exc:
        finish(folder, {**record, "state": "PRUNED", "reason": str(exc)}, keep_output=False)
        raise
    except Exception as exc:
        finish(folder, {**record, "state": "FAIL", "error": f"{type(exc).__name__}: {exc}"}, keep_output=False)
        trial.set_user_attr("result", {"error": f"{type(exc).__name__}: {exc}", "machine": machine_failure(exc)})
        raise
    evaluated = time.perf_counter()
    missing = [entry.name for entry, v in zip([*config.objectives, *config.constraints], scores) if math.isnan(v)]
    if missing:  # Optuna would record FAIL for a NaN: the trial fails everywhere, saying why
        error = f"no value for {', '.join(missing)} (the suite left it empty, or the measure gave NaN)"
        finish(folder, {**record, "state": "FAIL", "error": error}, keep_output=False)
        trial.set_user_attr("result", {"error": error})
        raise ValueError(error)
    objectives = scores[:len(config.objectives)]
    constraints = constraint_values(config.constraints, scores[len(config.objectives):])
    model_dir = model if publish is None else None
    if publish is not None and (keep or worth_keeping(trial.study, objectives, constraints)):
        model_dir = publish()
    timing = {"recipe_seconds": ran - start, "eval_seconds": evaluated - ran,
              "write_seconds": time.perf_counter() - evaluated, "in_memory": publish is not None}
    trial.set_user_attr("result", {**timing, "constraints": constraints,
                                   "constraint_values": scores[len(config.objectives):]})
    finish(folder, {**record, "state": "COMPLETE", "values": objectives, "constraints": constraints,
                     "model": str(Path(model_dir).relative_to(folder)) if model_dir else None, **timing},
           keep_output=True)
    return objectives if len(objectives) > 1 else objectives[0]
