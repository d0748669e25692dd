"""The retention-keeping options on the real model (SmolLM2-135M-Instruct), run as a user runs
them: `skillgraft data augment`, `skillgraft train CONFIG --set ...`, `skillgraft eval`.

    python benchmarks/keep_study.py WORK [--seed N] [--jobs 2] [--only NAME,NAME]
    python benchmarks/keep_study.py WORK0 --seeds-table WORK1,WORK2   # mean ± sd over the seeds

Knowledge (k=5 texts of `lab real`'s 20 invented facts, its LoRA budget) and persona (its 150
chats, seed 002's q,v LoRA), each plain and with `regularize.kl`, `data.replay` and both;
and the skill vector: `cp` (full fine-tuning on `lab real`'s CP text) plus each persona
run's delta (`skillgraft graft CP --delta BASE PERSONA/merged`). Every model is scored on
the knowledge (or persona) probes, on `retention_check` and `retention_tune` (kept, keyword,
general_kl against the untrained model). Every step is a
subprocess whose output is a file under WORK, and a step whose file exists is skipped, so a
run cut short continues where it stopped. The table goes to stdout and WORK/table.md.
Runs use one torch thread each (`--jobs` of them side by side).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from skillgraft.sweep.check import seeds_cell
from skillgraft.sweep.real_kit import CP, KNOWLEDGE, PERSONA, training_config  # the hand-set recipes, declared once

KL = {"regularize.kl.weight": 1.0}
REPLAY = {"data.replay.n": 60}
# name: (study, overrides); replay adds 60 chats to the data, so those runs get the steps
# that keep the epochs of the study's own data (k5: 6 epochs of 100 texts, persona: 2 of 150)
RUNS = {
    "k5": ("knowledge", {}),
    "k5-kl": ("knowledge", KL),
    "k5-kl0.2": ("knowledge", {"regularize.kl.weight": 0.2}),
    "k5-replay": ("knowledge", {**REPLAY, "max_steps": 120}),
    "k5-kl-replay": ("knowledge", {**KL, **REPLAY, "max_steps": 120}),
    "persona": ("persona", {}),
    "persona-kl": ("persona", KL),
    "persona-replay": ("persona", {**REPLAY, "max_steps": 53}),
    "persona-kl-replay": ("persona", {**KL, **REPLAY, "max_steps": 53}),
    "k5-qa": ("knowledge", {"data.train": "QA", "data.format": "auto", "data.answer_only": True,
                            "max_steps": 120}),
    "k5-full": ("knowledge", {"method": "full", "lr": 1e-4}),
    "k5-full-kl": ("knowledge", {"method": "full", "lr": 1e-4, **KL}),
    "cp": ("cp", {}),
}
GRAFTS = {f"cp+{name}": name for name in RUNS if name.startswith("persona")}


def sh(args: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as handle:
        done = subprocess.run(args, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(map(str, args))}; see {log}")


def prepare(work: Path, model: Path, seed: int) -> dict[str, Path]:
    from skillgraft.lab.real import corpus

    suites = corpus.write_suites(work / "suites")
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, extra in (("k5", ()), ("k5-qa", ("qa-pairs",))):
        if not (data / f"{name}.jsonl").is_file():
            sh(["skillgraft", "data", "augment", str(corpus.DATA / "facts.jsonl"), "-o", str(data / f"{name}.jsonl"),
                "--styles", ",".join((*corpus.STYLES, *extra)), "--framing", "fixed"],  # as `lab real` trains
               data / "augment.log")
    corpus.write_jsonl(data / "persona.jsonl", corpus.persona_records())
    corpus.write_jsonl(data / "cp.jsonl", corpus.cp_texts(40, 1000 + seed))
    configs = {}
    for study, base, train in (("knowledge", KNOWLEDGE, data / "k5.jsonl"),
                               ("persona", PERSONA, data / "persona.jsonl"), ("cp", CP, data / "cp.jsonl")):
        configs[study] = work / f"{study}.yaml"
        config = training_config(base, str(train), seed, merge=study != "cp", model=str(model))
        configs[study].write_text(yaml.safe_dump(config, sort_keys=False))
    return {**{f"suite:{k}": v for k, v in suites.items()}, **configs}


def train(name: str, work: Path, files: dict[str, Path]) -> None:
    study, overrides = RUNS[name]
    out = work / "runs" / name
    if (out / "skillgraft.json").is_file():
        return
    if overrides.get("data.train") == "QA":  # the k=5 texts plus the facts' own QA pairs
        overrides = {**overrides, "data.train": str(work / "data" / "k5-qa.jsonl")}
    sets = [f"output_dir={out}"] + [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    started = time.time()
    sh(["skillgraft", "train", str(files[study]), "--json", *[a for s in sets for a in ("--set", s)]],
       work / "runs" / f"{name}.log")
    (work / "runs" / f"{name}.seconds").write_text(f"{time.time() - started:.1f}\n")  # with loading, generation


def graft(name: str, work: Path, base: Path) -> Path:
    """CP + the persona run's delta at scale 1 (the skill vector, never saved on its own)."""
    out = work / "grafts" / name
    if not (out / "skillgraft.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        sh(["skillgraft", "graft", str(work / "runs" / "cp" / "model"), "--delta", str(base),
            f"{work / 'runs' / GRAFTS[name] / 'merged'}:1", "-o", str(out), "--force", "--quiet"],
           out.parent / f"{name}.log")
    return out


def dial(name: str, work: Path, base: Path) -> Path:
    """`RUN@SCALE`: the run's adapter merged at `merge_scale` SCALE (the function `train` merges
    with), a dial turned after training without training again."""
    from skillgraft.train.model import merge_adapter

    run, scale = name.split("@")
    out = work / "dials" / name
    if not (out / "config.json").is_file():
        record = json.loads((work / "runs" / run / "adapter" / "skillgraft.json").read_text())
        merge_adapter(str(base), work / "runs" / run / "adapter", out, bool(record.get("untied_lm_head")),
                      scale=float(scale))
        import shutil

        for file in (work / "runs" / run / "merged").glob("*"):
            if file.name.startswith(("tokenizer", "chat_template", "special_tokens")):
                shutil.copy(file, out / file.name)
    return out


def evaluate(name: str, model_dir: Path, work: Path, files: dict[str, Path], base: Path) -> None:
    run = name.split("@")[0]
    study = "persona" if name in GRAFTS else RUNS[run][0] if run in RUNS else "knowledge"
    suites = {"untrained": ["knowledge", "persona", "cp"], "cp": ["persona", "cp"]}.get(name, [study])
    if name in GRAFTS:
        suites = ["persona", "cp"]
    for suite in [files[f"suite:{s}"] for s in suites] + ["retention_check", "retention_tune"]:
        label = Path(suite).stem
        result = work / "eval" / f"{name}.{label}.json"
        if result.is_file():
            continue
        result.parent.mkdir(parents=True, exist_ok=True)
        sh(["skillgraft", "eval", str(model_dir), "--suite", str(suite), "--reference", str(base),
            "--batch-size", "16", "-o", str(result)], work / "eval" / f"{name}.{label}.log")


def scores(work: Path, name: str) -> dict[str, float | None]:
    row: dict[str, float | None] = {}
    for file in sorted((work / "eval").glob(f"{name}.*.json")):
        if file.name.count(".") != 2:
            continue
        result = json.loads(file.read_text())
        for per_model in result["scores"].values():
            for set_name, metrics in per_model.items():
                for metric, value in metrics.items():
                    if "." not in metric or metric == "style.marker.persona":
                        row[f"{set_name}.{metric}"] = value
    if name.startswith("cp"):
        row["retention_check.kept_vs_cp"] = kept_against(work, name, "cp")
    run = work / "runs" / name / "skillgraft.json"  # Trainer's train_runtime: training alone
    row["seconds"] = json.loads(run.read_text())["run"]["train_runtime"] if run.is_file() else None
    return row


def kept_against(work: Path, name: str, reference: str) -> float | None:
    """`kept` of run `name` on retention_check against run `reference` instead of the untrained
    model: of the questions `reference` answers right, the share `name` still answers right
    (from the two evaluations' items: the same greedy answers `eval --reference` would read)."""
    def right(run: str) -> dict[str, float] | None:
        file = work / "eval" / f"{run}.retention_check.json"
        if not file.is_file():
            return None
        return {i["id"]: i["metrics"]["keyword"] for i in json.loads(file.read_text())["items"]
                if i["set"] == "retention_check"}

    mine, theirs = right(name), right(reference)
    if mine is None or theirs is None:
        return None
    known = [item for item, value in theirs.items() if value == 1.0]
    return sum(mine[item] == 1.0 for item in known) / len(known) if known else None


def table(work: Path, names: list[str]) -> str:
    columns = [("heldout.keyword", "held-out keyword"), ("tune.keyword", "tune keyword"),
               ("persona.style.marker.persona", "style"), ("cp.keyword", "CP keyword"), ("retention_check.kept", "check kept"),
               ("retention_check.keyword", "check keyword"), ("retention_check.general_kl", "check general_kl"),
               ("retention_tune.kept", "tune kept"), ("seconds", "train s")]
    lines = ["| run | " + " | ".join(c[1] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in names:
        row = scores(work, name)
        cells = ["–" if row.get(k) is None else (f"{row[k]:.0f}" if k == "seconds" else f"{row[k]:.3f}")
                 for k, _ in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_table(works: list[Path], names: list[str]) -> str:
    """Mean ± sample sd over the seed folders `works` (per-seed values in brackets) of each
    column of `table`, for the runs every folder has finished."""
    columns = [("heldout.keyword", "held-out keyword"), ("persona.style.marker.persona", "style"),
               ("retention_check.kept", "check kept"), ("retention_check.kept_vs_cp", "check kept vs CP"),
               ("retention_check.keyword", "check keyword"), ("retention_check.general_kl", "check general_kl"),
               ("retention_tune.kept", "tune kept")]
    lines = ["| run | seeds | " + " | ".join(c[1] for c in columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for name in names:
        rows = [scores(work, name) for work in works]
        rows = [r for r in rows if any(r.get(k) is not None for k, _ in columns)]
        if not rows:
            continue
        cells = []
        for key, _ in columns:
            values = [r[key] for r in rows if r.get(key) is not None]
            cells.append(seeds_cell(values) if values else "–")
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", default=None, help="comma-separated run names (default: all)")
    parser.add_argument("--dial", default="", help="comma-separated RUN@SCALE: a finished run merged at that scale")
    parser.add_argument("--seeds-table", default="", metavar="WORK,WORK",
                        help="print mean ± sd over WORK and these other seed folders, run nothing")
    args = parser.parse_args()
    if args.seeds_table:
        works = [args.work.resolve(), *(Path(w).resolve() for w in args.seeds_table.split(","))]
        print(seeds_table(works, ["untrained", *RUNS, *GRAFTS]))
        return
    import torch

    from skillgraft.lab.real.model import converted_model, default_cache

    torch.set_num_threads(1)  # the dials merge in this process, beside the jobs' own processes
    work = args.work.resolve()
    (work / "runs").mkdir(parents=True, exist_ok=True)
    model = converted_model(default_cache())
    files = prepare(work, model, args.seed)
    # the first KL run generates the reference answers every later KL/replay run reads from the cache
    names = args.only.split(",") if args.only else ["k5-kl", *[n for n in RUNS if n != "k5-kl"]]
    dials = [d for d in args.dial.split(",") if d]
    started = time.time()

    def trained(n: str) -> Path:
        full = n == "cp" or RUNS[n][1].get("method") == "full"
        return work / "runs" / n / ("model" if full else "merged")

    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = [pool.submit(evaluate, "untrained", model, work, files, model)]
        jobs += [pool.submit(lambda n=n: (train(n, work, files), evaluate(n, trained(n), work, files, model)))
                 for n in names]
        for job in jobs:
            job.result()
        grafts = [g for g in GRAFTS if GRAFTS[g] in names and "cp" in names]
        later = [pool.submit(lambda g=g: evaluate(g, graft(g, work, model), work, files, model)) for g in grafts]
        later += [pool.submit(lambda d=d: evaluate(d, dial(d, work, model), work, files, model)) for d in dials]
        for job in later:
            job.result()
    text = table(work, ["untrained", *names, *grafts, *dials])
    (work / "table.md").write_text(text + f"\n\n({time.time() - started:.0f} s, seed {args.seed})\n")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
