"""`skillgraft sweep check`: points of a sweep checked on what no trial saw — the held-out
probe half, the `retention_check` questions, other seeds and (training sweeps) a fact set no
search looked at — run as a user runs them (`skillgraft run TRIAL/recipe.yaml --set …`,
`skillgraft eval`), each step in its own process.

A search ranks its trials on the tune data; a point counts only where it holds on the rest
(docs/sweeps.md). Every step writes a file under OUT and is skipped when that file exists, so a
check cut short continues where it stopped, and a trial's model is trained again only when an
evaluation still needs it (the sweep tidies away the models of trials that leave its front).

Graft trials are rebuilt on another seed's models: `--seed N:DIR` names a folder laid out as a
kit's `models/` (`cp/model`, `persona/merged`, `knowledge-full/model`, …), and every model of
the trial's recipe inside its kit's `models/` becomes the same path under DIR (a model named
otherwise, such as the instruct model a knowledge graft starts from, stays). Training trials
are trained again with `--set seed=N` (seed 0 reuses the trial's own model when the sweep kept
it). `--unseen SUITE` also checks each trial once on the unseen facts, scored on that suite's
`unseen` set: a training trial trained (first seed; the first N with `--unseen-seeds N`) with
`data.train`'s file NAME replaced by `unseen-NAME` beside it (`sweep real-kit` writes both); a
graft trial, with `--unseen SUITE:DIR`, rebuilt on the models in DIR that were trained on the
unseen facts (one seed's: DIR is one folder).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from skillgraft.errors import UserError

PROBE_SETS = ("tune", "heldout")


@dataclass(frozen=True)
class Seed:
    number: str
    models: Path | None  # graft sweeps: a folder laid out as a kit's models/


def parse_seed(text: str) -> Seed:
    number, _, folder = text.partition(":")
    if not number.isdigit():
        raise UserError(f"--seed {text!r}: expected N or N:MODELS_DIR (a seed number, for grafts its models' folder)")
    return Seed(number, Path(folder) if folder else None)


def parse_score(text: str) -> tuple[str, str]:
    label, _, metric = text.partition("=")
    if not label or not metric:
        raise UserError(f"--score {text!r}: expected NAME=METRIC, e.g. persona=style.marker.persona or keyword=keyword")
    return label, metric


class Steps:
    """The check's steps as `skillgraft` runs in child processes, each logged beside its output."""

    def __init__(self, say: Callable[[str], None], threads: int | None = None):
        self.say = say
        # each step's process picks its threads as any skillgraft command does (cpu.choose_threads:
        # the cores other work leaves free), unless the check was given a number for all of them
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"OMP_NUM_THREADS": str(threads)} if threads else {})}

    def skillgraft(self, args: list[str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.say(f"skillgraft {' '.join(args[:2])} … (log: {log})")
        with open(log, "w") as handle:
            done = subprocess.run([sys.executable, "-m", "skillgraft.cli", *args], stdout=handle,
                                  stderr=subprocess.STDOUT, env=self.env)
        if done.returncode:
            last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
            reason = last[0].strip().removeprefix("error: ") if last else "no output"
            raise UserError(f"`skillgraft {' '.join(args)}` failed ({done.returncode}): {reason}; see {log}")

    def evaluate(self, model: str | Callable[[], str], suite: str, out: Path, reference: str | None = None) -> dict:
        """`skillgraft eval` of `model` (a path, or a callable that makes the model and returns
        its path: called only when this evaluation has not been written yet)."""
        if not out.is_file():
            model = model() if callable(model) else model
            self.skillgraft(["eval", model, "--suite", suite, "--batch-size", "32", "-o", str(out), "--quiet",
                             *(["--reference", reference] if reference else [])], out.with_suffix(".log"))
        return json.loads(out.read_text())

    def graft(self, recipe: Path, seed: Seed, model: Path) -> tuple[str, str]:
        """The trial's graft rebuilt on another seed's models; (model, its target)."""
        if seed.models is None:
            raise UserError(f"{recipe}: a graft trial is rebuilt on another seed's models: give --seed "
                            f"{seed.number}:MODELS_DIR (a folder laid out as a kit's models/)")
        tree = yaml.safe_load(recipe.read_text())
        target = on_seed(tree["target"], seed.models)
        if not (model / "skillgraft.json").is_file():
            self.skillgraft(["run", str(recipe), "--set", f"target={target}",
                             "--set", f"vectors.0.skilled={on_seed(tree['vectors'][0]['skilled'], seed.models)}",
                             "--set", f"output={model}", "--set", "force=true", "--quiet"], model.with_suffix(".log"))
        return str(model), target

    def unseen(self, recipe: Path, kind: str, unseen: str, seed: str, place: Path, untrained: str,
               untrained_right: dict, metric: str) -> dict:
        """The trial on the unseen facts: its `unseen` score and the share of the untrained
        model's right retention_check answers it keeps."""
        suite, _, folder = unseen.partition(":")
        if kind == "graft":
            if not folder:
                raise UserError(f"{recipe}: a graft trial is checked on the unseen facts with --unseen SUITE:MODELS_DIR "
                                "(its models trained on the unseen facts, laid out as a kit's models/)")
            model, start = self.graft(recipe, Seed(seed, Path(folder)), place)
        else:
            data = f"data.train={unseen_data(recipe)}"
            model, start = lambda: self.trained(recipe, seed, place, data), untrained  # noqa: E731
        probes = self.evaluate(model, suite, place.with_suffix(".probes.json"))
        retention = self.evaluate(model, "retention_check", place.with_suffix(".retention_check.json"),
                                  reference=start)
        return {"unseen": metric_of(probes, "unseen", metric, suite),
                "unseen_kept": kept(right_answers(retention), untrained_right)}

    def trained(self, recipe: Path, seed: str, run: Path, *sets: str) -> str:
        """The trial's training config run again with another seed (or data); the model it published."""
        own = trained_model(recipe.parent / "output")
        if seed == "0" and not sets and own:
            return str(own)  # the sweep's own run of this recipe
        if not trained_model(run):
            overrides = [f"seed={seed}", f"output_dir={run}", *sets]
            self.skillgraft(["run", str(portable(recipe, run.with_suffix(".recipe.yaml"))),
                             *[a for item in overrides for a in ("--set", item)], "--force", "--quiet"],
                            run.with_suffix(".log"))
        model = trained_model(run)
        if model is None:
            raise UserError(f"the training in {run} finished without a model to evaluate (see {run.with_suffix('.log')})")
        return str(model)


def trained_model(run: Path) -> Path | None:
    """The model a finished training run published in its folder `run`, as its manifest names it
    (`outputs`): `merged/`, or for full fine-tuning merged at scale 1 the trained `model/`
    itself; None while the run has not finished. Found by name inside `run`, so a check's folder
    moved to another checkout still finds its models."""
    manifest = run / "skillgraft.json"
    if not manifest.is_file():
        return None
    outputs = json.loads(manifest.read_text()).get("outputs") or {}
    published = outputs.get("merged_dir") or outputs.get("model_dir")
    model = run / Path(published).name if published else None
    return model if model is not None and (model / "config.json").is_file() else None


def on_seed(model: str, models: Path) -> str:
    """A graft trial's model on another seed's models: a path inside a kit's `models/`
    (`…/models/cp/model`) becomes the same path under `models`; a model named otherwise (the
    instruct model the knowledge graft starts from, `lab:smollm2`) is every seed's."""
    parts = Path(model).parts
    if "models" not in parts:
        return model
    last = len(parts) - 1 - parts[::-1].index("models")
    return str(models.joinpath(*parts[last + 1:]))


def portable(recipe: Path, copy: Path) -> Path:
    """The trial's training config with every relative path made absolute from the current
    folder, written to `copy`: sweeps before 2026-12-05 wrote their trials' paths relative to the
    folder they ran in (run the check from there), and `skillgraft run` reads a recipe's relative
    paths from the recipe's own folder. Absolute paths (sweeps since) stay as they are."""
    from skillgraft.config import resolve_paths, validate
    from skillgraft.train.config import TrainConfig

    config = validate(yaml.safe_load(recipe.read_text()), TrainConfig, str(recipe))
    resolve_paths(config, Path.cwd(), [])
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return copy


def scores(result: dict) -> dict:
    """The evaluated model's scores (one model per file, whatever path it was given as)."""
    return next(iter(result["scores"].values()))


def right_answers(result: dict) -> dict[str, bool]:
    return {item["id"]: item["metrics"]["keyword"] == 1.0 for item in result["items"]}


def kept(model: dict[str, bool], reference: dict[str, bool]) -> float:
    """Of the questions the reference answers right, the share `model` still answers right."""
    known = [question for question, right in reference.items() if right]
    return sum(model[q] for q in known) / len(known) if known else float("nan")  # a lab model knows none


def metric_of(result: dict, set_name: str, metric: str, suite: str) -> float:
    values = scores(result)
    if set_name not in values or metric not in values[set_name]:
        found = {name: sorted(v) for name, v in values.items()}
        raise UserError(f"{suite}: no {metric!r} on set {set_name!r} (scored: {found}); the check needs a suite "
                        f"with sets {' and '.join(PROBE_SETS)} and the metric given to --score")
    return values[set_name][metric]


def unseen_data(recipe: Path) -> str:
    """`data.train` with its file NAME replaced by `unseen-NAME` (the same augmentation of the unseen facts)."""
    train = Path(yaml.safe_load(recipe.read_text())["data"]["train"])
    unseen = train.with_name(f"unseen-{train.name}")
    if not unseen.is_file():
        raise UserError(f"{unseen} does not exist: --unseen trains on `unseen-NAME` beside the trial's data "
                        "(`skillgraft sweep real-kit` writes both)")
    return str(unseen)


def trial_recipes(sweep: Path, trials: list[int]) -> dict[int, Path]:
    recipes = {number: sweep / "trials" / f"{number:04d}" / "recipe.yaml" for number in trials}
    missing = [str(path) for path in recipes.values() if not path.is_file()]
    if missing:
        raise UserError(f"no such trial in {sweep}: {', '.join(missing)} not found")
    return recipes


def check(sweep: Path, trials: list[int], suite: str, score: str, untrained: str, seeds: list[Seed], out: Path,
          unseen: str | None = None, say: Callable[[str], None] = lambda line: None, threads: int | None = None,
          unseen_seeds: int = 1) -> dict:
    """Run the check; returns {"rows": {trial: [one row per seed]}, "table": markdown, "out": OUT}
    and writes OUT/rows.json and OUT/table.md."""
    label, metric = parse_score(score)
    recipes = trial_recipes(sweep, trials)
    if not seeds:
        raise UserError("give at least one --seed")
    if unseen and not 1 <= unseen_seeds <= len(seeds):
        raise UserError(f"--unseen-seeds {unseen_seeds}: between 1 and the {len(seeds)} --seed given")
    kinds = {number: yaml.safe_load(recipe.read_text()).get("kind", "graft") for number, recipe in recipes.items()}
    if unseen and unseen_seeds > 1 and "graft" in kinds.values():
        raise UserError("--unseen-seeds: a graft trial is checked on the unseen facts on the one seed whose models "
                        "--unseen SUITE:MODELS_DIR names; give --unseen-seeds 1")
    out = out.resolve()
    steps = Steps(say, threads)
    untrained_right = right_answers(steps.evaluate(untrained, "retention_check", out / "untrained.retention_check.json"))
    rows: dict[str, list[dict]] = {}
    for index, seed in enumerate(seeds):
        for number, recipe in recipes.items():
            kind = kinds[number]
            place = out / f"seed{seed.number}" / f"trial{number}"
            if kind == "graft":
                model, start = steps.graft(recipe, seed, place)
            else:  # trained only if an evaluation below still needs it
                model = lambda recipe=recipe, seed=seed, place=place: steps.trained(recipe, seed.number, place)  # noqa: E731
                start = untrained
            start_right = untrained_right if start == untrained else right_answers(steps.evaluate(
                start, "retention_check", out / f"seed{seed.number}" / "start.retention_check.json"))
            probes = steps.evaluate(model, suite, place.with_suffix(".probes.json"))
            retention = steps.evaluate(model, "retention_check", place.with_suffix(".retention_check.json"),
                                       reference=start)
            row = {"tune": metric_of(probes, "tune", metric, suite), "heldout": metric_of(probes, "heldout", metric, suite),
                   "kept_vs_untrained": kept(right_answers(retention), untrained_right),
                   "kept_vs_start": kept(right_answers(retention), start_right),
                   "general_kl_vs_start": scores(retention)["retention_check"]["general_kl"]}
            if unseen and index < unseen_seeds:
                row.update(steps.unseen(recipe, kind, unseen, seed.number, unseen_place(out, index, seed, number),
                                        untrained, untrained_right, metric))
            rows.setdefault(str(number), []).append(row)
    table = markdown_table(rows, label)
    (out / "table.md").write_text(table + "\n")
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    return {"rows": rows, "table": table, "out": str(out)}


def unseen_place(out: Path, index: int, seed: Seed, number: int) -> Path:
    """Where a trial's unseen-facts run of the index-th seed lives: `unseen/` for the first
    (as checks before `--unseen-seeds` wrote it), `unseen-seedN/` for the others."""
    return out / ("unseen" if index == 0 else f"unseen-seed{seed.number}") / f"trial{number}"


def markdown_table(rows: dict[str, list[dict]], label: str) -> str:
    """One line per trial: mean ± sd (each seed's value) of every column."""
    columns = ["tune", "heldout", "kept_vs_untrained", "kept_vs_start", "general_kl_vs_start"]
    headers = [f"{label} tune", f"{label} held-out", "check kept (vs untrained)", "check kept (vs start)",
               "check general_kl (vs start)"]
    if any("unseen" in row for runs in rows.values() for row in runs):
        columns += ["unseen", "unseen_kept"]
        counted = max(sum("unseen" in row for row in runs) for runs in rows.values())
        headers += [f"unseen facts {label} ({counted} seed{'s' if counted > 1 else ''})", "unseen check kept (vs untrained)"]
    lines = ["| trial | seeds | " + " | ".join(headers) + " |", "|---" * (len(headers) + 2) + "|"]
    for number, runs in rows.items():
        cells = []
        for column in columns:
            values = [row[column] for row in runs if column in row and row[column] == row[column]]  # NaN: nothing to keep
            cells.append(seeds_cell(values) if values else "n/a")
        lines.append(f"| {number} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_cell(values: list[float]) -> str:
    """A table cell for one number over seeds: mean ± sd, then each seed's value."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {spread:.3f} ({', '.join(f'{v:.2f}' for v in values)})"
