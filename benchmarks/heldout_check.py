"""Check points of a sweep's front on what no trial saw: the held-out probe half, the
`retention_check` questions, and other seeds' models, run as a user runs them
(`skillgraft run TRIAL/recipe.yaml --set ...`, `skillgraft eval`).

    python benchmarks/heldout_check.py SWEEP_DIR --trials 0,7,19 --suite KIT/suites/persona.yaml \
        --score persona=style.marker.persona --untrained lab:smollm2 \
        --seed 0:kits/real/models --seed 1:SEED1_MODELS --seed 2:SEED2_MODELS -o CHECK_DIR

Graft sweeps: `--seed N:DIR` names a folder laid out as a kit's `models/` (`cp/model`,
`persona/merged`, `persona-replay/merged`, ...: the keep study's `runs/` is one); every chosen
trial's recipe is rebuilt with DIR/cp/model as the target and, as the skilled model, the
folder of DIR named like the trial's own (`models/persona-replay/merged` → DIR/persona-replay/merged;
the vector's base stays). Every step writes a file under
CHECK_DIR and is skipped when it exists, so a check cut short continues where it stopped.
The table (tune and held-out half, retention_check kept against the untrained model and against
the graft's target, general_kl against the target) goes to stdout and CHECK_DIR/table.md.
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


def evaluate(model: str, suite: str, out: Path, reference: str | None = None) -> dict:
    if not out.is_file():
        sh([SKILLGRAFT, "eval", model, "--suite", suite, "--batch-size", "32", "-o", str(out), "--quiet",
            *(["--reference", reference] if reference else [])], out.with_suffix(".log"))
    return json.loads(out.read_text())


def right_answers(result: dict) -> dict[str, bool]:
    return {i["id"]: i["metrics"]["keyword"] == 1.0 for i in result["items"]}


def kept(model: dict[str, bool], reference: dict[str, bool]) -> float:
    """Of the questions the reference answers right, the share `model` still answers right."""
    known = [q for q, ok in reference.items() if ok]
    return sum(model[q] for q in known) / len(known)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--trials", required=True, help="comma-separated trial numbers")
    parser.add_argument("--suite", required=True, help="the probe suite with `tune` and `heldout` sets")
    parser.add_argument("--score", required=True, metavar="NAME=METRIC", help="the metric to report, e.g. "
                        "persona=style.marker.persona")
    parser.add_argument("--untrained", required=True, help="the model before any training (kept's first reference)")
    parser.add_argument("--seed", action="append", required=True, metavar="N:DIR")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    label, metric = args.score.split("=")
    out = args.out.resolve()
    untrained = right_answers(evaluate(args.untrained, "retention_check", out / "untrained.retention_check.json"))
    rows = {}
    for spec in args.seed:
        seed, folder = spec.split(":", 1)
        target = str(Path(folder) / "cp" / "model")
        target_right = right_answers(evaluate(target, "retention_check", out / f"seed{seed}" / "target.retention_check.json"))
        for number in args.trials.split(","):
            recipe = args.sweep / "trials" / f"{int(number):04d}" / "recipe.yaml"
            trained = Path(yaml.safe_load(recipe.read_text())["vectors"][0]["skilled"]).parent.name
            skilled = str(Path(folder) / trained / "merged")
            model = out / f"seed{seed}" / f"trial{number}"
            if not (model / "skillgraft.json").is_file():
                sh([SKILLGRAFT, "run", str(recipe), "--set", f"target={target}", "--set", f"vectors.0.skilled={skilled}",
                    "--set", f"output={model}", "--set", "force=true", "--quiet"], model.with_suffix(".log"))
            probes = evaluate(str(model), args.suite, model.with_suffix(".probes.json"))["scores"][str(model)]
            check = evaluate(str(model), "retention_check", model.with_suffix(".retention_check.json"), reference=target)
            rows.setdefault(number, []).append({
                "tune": probes["tune"][metric], "heldout": probes["heldout"][metric],
                "kept_vs_untrained": kept(right_answers(check), untrained),
                "kept_vs_target": kept(right_answers(check), target_right),
                "general_kl_vs_target": check["scores"][str(model)]["retention_check"]["general_kl"]})
    columns = ["tune", "heldout", "kept_vs_untrained", "kept_vs_target", "general_kl_vs_target"]
    lines = [f"| trial | seeds | {label} tune | {label} held-out | check kept (vs untrained) | check kept (vs target) "
             "| check general_kl (vs target) |", "|---" * 7 + "|"]
    for number, runs in rows.items():
        cells = []
        for column in columns:
            values = [r[column] for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.3f} ± {sd:.3f} ({', '.join(f'{v:.2f}' for v in values)})")
        lines.append(f"| {number} | {len(runs)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    (out / "table.md").write_text(text + "\n")
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()
