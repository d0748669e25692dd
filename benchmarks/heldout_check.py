"""Check points of a sweep's front on what no trial saw: the held-out probe half, the
`retention_check` questions, other seeds, and (knowledge) facts no search looked at, run as a
user runs them (`skillgraft run TRIAL/recipe.yaml --set ...`, `skillgraft eval`).

Graft sweeps:

    python benchmarks/heldout_check.py SWEEP_DIR --trials 0,7,19 --suite KIT/suites/persona.yaml \
        --score persona=style.marker.persona --untrained lab:smollm2 \
        --seed 0:kits/real/models --seed 1:SEED1_MODELS --seed 2:SEED2_MODELS -o CHECK_DIR

`--seed N:DIR` names a folder laid out as a kit's `models/` (`cp/model`, `persona/merged`,
`persona-replay/merged`, ...: the keep study's `runs/` is one); every chosen trial's recipe is
rebuilt with DIR/cp/model as the target and, as the skilled model, the folder of DIR named like
the trial's own (`models/persona-replay/merged` → DIR/persona-replay/merged; the vector's base
stays).

Training sweeps (knowledge, persona):

    python benchmarks/heldout_check.py runs/real-knowledge --trials 0,1,12 \
        --suite kits/real/suites/knowledge.yaml --score keyword=keyword --untrained lab:smollm2 \
        --seed 0 --seed 1 --seed 2 --unseen kits/real/suites/unseen.yaml -o CHECK_DIR

every chosen trial's recipe is trained again with `--set seed=N` (seed 0 reuses the trial's own
model when the sweep kept it); with `--unseen SUITE`, also once (first seed) on the unseen
facts: its `data.train` file NAME replaced by `unseen-NAME` beside it (`sweep real-kit` writes
both), scored on that suite's `unseen` set.

Every step writes a file under CHECK_DIR and is skipped when it exists, so a check cut short
continues where it stopped. The table (tune and held-out half, retention_check kept against the
untrained model and against the graft's target, general_kl against the start model; unseen)
goes to stdout and CHECK_DIR/table.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

SKILLGRAFT = str(Path(sys.executable).with_name("skillgraft"))


def sh(args: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        done = subprocess.run(args, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(args)}; see {log}")


def evaluate(model, suite: str, out: Path, reference: str | None = None) -> dict:
    """`skillgraft eval` of `model` (a path, or a callable that makes the model and returns its
    path: called only when this evaluation has not been written yet)."""
    if not out.is_file():
        model = model() if callable(model) else model
        sh([SKILLGRAFT, "eval", model, "--suite", suite, "--batch-size", "32", "-o", str(out), "--quiet",
            *(["--reference", reference] if reference else [])], out.with_suffix(".log"))
    return json.loads(out.read_text())


def scores(result: dict) -> dict:
    """The evaluated model's scores (one model per file, whatever path it was given as)."""
    return next(iter(result["scores"].values()))


def right_answers(result: dict) -> dict[str, bool]:
    return {i["id"]: i["metrics"]["keyword"] == 1.0 for i in result["items"]}


def kept(model: dict[str, bool], reference: dict[str, bool]) -> float:
    """Of the questions the reference answers right, the share `model` still answers right."""
    known = [q for q, ok in reference.items() if ok]
    return sum(model[q] for q in known) / len(known) if known else float("nan")   # a lab model knows none


def graft_model(recipe: Path, seed_dir: str, model: Path) -> tuple[str, str]:
    """The trial's graft rebuilt on another seed's models; (model, its target)."""
    target = str(Path(seed_dir) / "cp" / "model")
    trained = Path(yaml.safe_load(recipe.read_text())["vectors"][0]["skilled"]).parent.name
    if not (model / "skillgraft.json").is_file():
        sh([SKILLGRAFT, "run", str(recipe), "--set", f"target={target}",
            "--set", f"vectors.0.skilled={Path(seed_dir) / trained / 'merged'}", "--set", f"output={model}",
            "--set", "force=true", "--quiet"], model.with_suffix(".log"))
    return str(model), target


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


def trained_model(recipe: Path, seed: str, run: Path, *sets: str) -> str:
    """The trial's training config run again with another seed (or data); its merged model."""
    own = recipe.parent / "output" / "merged"
    if seed == "0" and not sets and (own / "config.json").is_file():
        return str(own)     # the sweep's own run of this recipe
    if not (run / "merged" / "config.json").is_file():
        overrides = [f"seed={seed}", f"output_dir={run}", *sets]
        sh([SKILLGRAFT, "run", str(portable(recipe, run.with_suffix(".recipe.yaml"))),
            *[a for item in overrides for a in ("--set", item)], "--force", "--quiet"], run.with_suffix(".log"))
    return str(run / "merged")


def unseen_data(recipe: Path) -> str:
    """`data.train` with its file NAME replaced by `unseen-NAME` (the same augmentation of the unseen facts)."""
    train = Path(yaml.safe_load(recipe.read_text())["data"]["train"])
    unseen = train.with_name(f"unseen-{train.name}")
    if not unseen.is_file():
        raise SystemExit(f"{unseen} does not exist: write the kit again with `skillgraft sweep real-kit`")
    return str(unseen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--trials", required=True, help="comma-separated trial numbers")
    parser.add_argument("--suite", required=True, help="the probe suite with `tune` and `heldout` sets")
    parser.add_argument("--score", required=True, metavar="NAME=METRIC", help="the metric to report, e.g. "
                        "persona=style.marker.persona")
    parser.add_argument("--untrained", required=True, help="the model before any training (kept's first reference)")
    parser.add_argument("--seed", action="append", required=True, metavar="N[:DIR]")
    parser.add_argument("--unseen", default=None, metavar="SUITE", help="training sweeps: also train on the unseen "
                        "facts (first seed) and score this suite's `unseen` set")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    label, metric = args.score.split("=")
    out = args.out.resolve()
    untrained_model = args.untrained
    untrained = right_answers(evaluate(untrained_model, "retention_check", out / "untrained.retention_check.json"))
    rows = {}
    for index, spec in enumerate(args.seed):
        seed, _, folder = spec.partition(":")
        for number in args.trials.split(","):
            recipe = args.sweep / "trials" / f"{int(number):04d}" / "recipe.yaml"
            kind = yaml.safe_load(recipe.read_text()).get("kind", "graft")
            place = out / f"seed{seed}" / f"trial{number}"
            if kind == "graft":
                model, start = graft_model(recipe, folder, place)
            else:   # trained only if an evaluation below still needs it (the sweep may have tidied it away)
                model, start = (lambda recipe=recipe, seed=seed, place=place: trained_model(recipe, seed, place),
                                untrained_model)
            start_right = right_answers(evaluate(start, "retention_check",
                                                 out / f"seed{seed}" / "start.retention_check.json"))
            probes = scores(evaluate(model, args.suite, place.with_suffix(".probes.json")))
            check = evaluate(model, "retention_check", place.with_suffix(".retention_check.json"), reference=start)
            row = {"tune": probes["tune"][metric], "heldout": probes["heldout"][metric],
                   "kept_vs_untrained": kept(right_answers(check), untrained),
                   "kept_vs_start": kept(right_answers(check), start_right),
                   "general_kl_vs_start": scores(check)["retention_check"]["general_kl"]}
            if args.unseen and kind != "graft" and index == 0:
                unseen_place = out / "unseen" / f"trial{number}"
                data = f"data.train={unseen_data(recipe)}"
                unseen_model = lambda recipe=recipe, seed=seed, place=unseen_place, data=data: trained_model(  # noqa: E731
                    recipe, seed, place, data)
                unseen_probes = unseen_place.with_suffix(".probes.json")
                unseen_scores = scores(evaluate(unseen_model, args.unseen, unseen_probes))
                unseen_check = evaluate(unseen_model, "retention_check",
                                        unseen_place.with_suffix(".retention_check.json"), reference=start)
                row["unseen"] = unseen_scores["unseen"][metric]
                row["unseen_kept"] = kept(right_answers(unseen_check), untrained)
            rows.setdefault(number, []).append(row)
    columns = ["tune", "heldout", "kept_vs_untrained", "kept_vs_start", "general_kl_vs_start"]
    headers = [f"{label} tune", f"{label} held-out", "check kept (vs untrained)", "check kept (vs start)",
               "check general_kl (vs start)"]
    if any("unseen" in r for runs in rows.values() for r in runs):
        columns += ["unseen", "unseen_kept"]
        headers += [f"unseen facts {label} (1 seed)", "unseen check kept (vs untrained)"]
    lines = ["| trial | seeds | " + " | ".join(headers) + " |", "|---" * (len(headers) + 2) + "|"]
    for number, runs in rows.items():
        cells = []
        for column in columns:
            values = [r[column] for r in runs if column in r and r[column] == r[column]]   # NaN: nothing to keep
            if not values:
                cells.append("n/a")
                continue
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.3f} ± {sd:.3f} ({', '.join(f'{v:.2f}' for v in values)})")
        lines.append(f"| {number} | {len(runs)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    (out / "table.md").write_text(text + "\n")
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()
