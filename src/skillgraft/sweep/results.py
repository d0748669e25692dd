"""What a study found: feasible trials, the best trial or the Pareto front, the trials as rows.

Feasibility is decided here from the constraint values each trial stored (≤ 0 is feasible,
Optuna's convention), whatever the sampler, so random and grid sweeps respect constraints
in what they report too.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from skillgraft.sweep.folders import drop_output, rebuild_command, trial_dir


def completed(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


def feasible(trial) -> bool:
    return all(c <= 0 for c in trial.user_attrs.get("result", {}).get("constraints", []))


def dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    """a is at least as good as b everywhere and better somewhere."""
    signs = [1 if d == "maximize" else -1 for d in directions]
    better = [s * (x - y) for x, y, s in zip(a, b, signs)]
    return all(v >= 0 for v in better) and any(v > 0 for v in better)


def front(study, done: list | None = None) -> list:
    """The best feasible trial (one objective) or the non-dominated feasible trials (several),
    of `done` (completed trials read once by the caller) or of the study's completed trials."""
    directions = [d.name.lower() for d in study.directions]
    trials = [t for t in (completed(study) if done is None else done) if feasible(t)]
    if not trials:
        return []
    if len(directions) == 1:
        sign = 1 if directions[0] == "maximize" else -1
        return [max(trials, key=lambda t: (sign * t.values[0], -t.number))]
    import numpy as np  # one vectorised pass: a 1,000-trial front in milliseconds, not seconds

    signs = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
    values = np.array([t.values for t in trials]) * signs
    dominated = [bool(((values >= row).all(axis=1) & (values > row).any(axis=1)).any()) for row in values]
    return [t for t, out in zip(trials, dominated) if not out]


def worth_keeping(study, objectives: list[float], constraints: list[float]) -> bool:
    """Would a completed trial with these values be best (one objective) or on the front
    (several) among the study's completed trials now? Only such a trial's folder is written."""
    if any(c > 0 for c in constraints):
        return False
    directions = [d.name.lower() for d in study.directions]
    others = [t.values for t in completed(study) if feasible(t)]
    if len(directions) == 1:
        sign = 1 if directions[0] == "maximize" else -1
        return all(sign * objectives[0] > sign * v[0] for v in others)
    return not any(dominates(v, objectives, directions) or v == objectives for v in others)


def front_entries(study, out: Path) -> list[dict]:
    """The front as `sweep run --json` and the report list it: values, parameters, recipe, rebuild command."""
    return [{"number": t.number, "values": t.values, "params": t.params,
             "recipe": str(trial_dir(out, t.number) / "recipe.yaml"),
             "rebuild": rebuild_command(trial_dir(out, t.number))} for t in front(study)]


def format_params(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def tidy_outputs(study, out: Path) -> None:
    """Delete the model outputs of completed trials that are neither best nor on the front,
    judged on one read of the trials (a trial completing meanwhile is judged next time)."""
    done = completed(study)
    keep = {t.number for t in front(study, done)}
    for trial in done:
        folder = trial_dir(out, trial.number)
        if trial.number not in keep and (folder / "output").exists():
            drop_output(folder)


def objective_names(sweep_config: dict) -> list[str]:
    """Column names for the objectives: a measure's name, or suite/set/metric with the suite
    named by its file's stem (`retention_tune`, not /home/…/suites/retention_tune.yaml)."""
    names = []
    for entry in sweep_config["objectives"]:
        if entry.get("measure"):
            names.append(entry["measure"])
            continue
        suite = str(entry["suite"])
        if suite.endswith((".yaml", ".yml")) or "/" in suite:
            suite = Path(suite).stem
        names.append(f"{suite}/{entry['set']}/{entry['metric']}")
    return names


def rows(study) -> list[dict]:
    """One row per trial, every state, as the CSV has them."""
    from skillgraft.sweep.study import CONFIG_ATTR

    config = study.user_attrs.get(CONFIG_ATTR, {})
    names = objective_names(config) if config else [f"value_{i}" for i in range(len(study.directions))]
    params = sorted({p for t in study.trials for p in t.params})
    out = []
    for t in study.trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        row = {"number": t.number, "state": t.state.name}
        row.update({name: (t.values[i] if t.values else None) for i, name in enumerate(names)})
        row.update({f"param:{p}": t.params.get(p) for p in params})
        result, where = t.user_attrs.get("result", {}), t.user_attrs.get("trial", {})
        row.update({"feasible": feasible(t) if t.values else None, "seconds": duration,
                    "recipe_seconds": result.get("recipe_seconds"), "eval_seconds": result.get("eval_seconds"),
                    "retry_of": t.system_attrs.get("failed_trial"), "trial_dir": where.get("dir"),
                    "host": where.get("host"), "error": result.get("error")})
        out.append(row)
    return out


def to_csv(table: list[dict]) -> str:
    buffer = io.StringIO()
    if table:
        writer = csv.DictWriter(buffer, fieldnames=list(table[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    return buffer.getvalue()
