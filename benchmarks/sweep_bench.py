"""Sweep benchmarks (issue 13), printed as tables.

1. Workers: N equal-cost lab graft trials (`skillgraft sweep run`, one torch thread per
   process) with one worker and with two on the same SQLite storage; goal ≤ 0.6× the wall time.
2. The sweep's own cost per trial: the same machinery (sampling, recipe materialisation, the
   trial folder and manifest, storage writes, tidying outputs) with the recipe and its
   evaluation replaced by no-ops, at 10 and 1,000 trials, on SQLite and (with --postgres URL)
   PostgreSQL; goal: median < 0.5 s.

3. Trial paths: lab graft trials written to a folder and loaded back (the path before
   in-memory trials) against grafted in memory on a warm target, alternated in one process.

    PYTHONPATH=src python benchmarks/sweep_bench.py [--trials 12] [--overhead 10,1000] [--postgres URL] [--paths 12]

Print `uptime` beside the numbers: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import yaml

GRAFT = {"kind": "graft", "target": "lab:cp", "vectors": [{"base": "lab:base", "skilled": "lab:skilled"}],
         "exclude": ["embed_tokens", "lm_head"], "output": "out"}


def config(path: Path, trials: int) -> Path:
    path.write_text(yaml.safe_dump({
        "kind": "sweep", "base": GRAFT, "sampler": {"name": "random"}, "n_trials": trials,
        "space": {"vectors.0.scale": {"type": "float", "low": 0.5, "high": 1.5}},
        "objectives": [{"measure": "lab_skill_b"}, {"measure": "lab_retention_a"}]}))
    return path


def workers_bench(root: Path, trials: int) -> list[tuple[str, float]]:
    skillgraft = str(Path(sys.executable).with_name("skillgraft"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    path = config(root / "workers.yaml", trials)
    rows = []
    for workers in (1, 2):
        out = root / f"w{workers}"
        start = time.perf_counter()
        subprocess.run([skillgraft, "sweep", "run", str(path), "-o", str(out), "--workers", str(workers), "--json"],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows.append((f"{workers} worker{'s' * (workers > 1)}, {trials} trials", time.perf_counter() - start))
    return rows


def overhead_bench(root: Path, trials: int, storage: str | None) -> dict:
    """Per-trial seconds of everything but the recipe and its evaluation (both no-ops here)."""
    import optuna

    from skillgraft.sweep import trial as trial_module
    from skillgraft.sweep.config import load_sweep
    from skillgraft.sweep.study import optimize, prepare_study

    def no_recipe(recipe, sweep, on_probe):
        Path(recipe.output).mkdir(parents=True)
        (Path(recipe.output) / "skillgraft.json").write_text("{}")
        return recipe.output, None

    out = root / f"overhead-{trials}-{'pg' if storage else 'sqlite'}"
    sweep = load_sweep(config(root / "overhead.yaml", trials))
    name = f"bench-{trials}-{time.time_ns()}"
    url = prepare_study(sweep, out, storage, name, new=False)
    counter = iter(range(10**9))

    def fake_scores(entries, model_dir, recipe):  # a spread of values, so the front keeps changing
        n = next(counter)
        return [n * 37 % 97 / 97, n * 31 % 89 / 89]

    with mock.patch.object(trial_module, "_run_recipe", no_recipe), \
            mock.patch.object(trial_module, "evaluate", fake_scores):
        start = time.perf_counter()
        optimize(sweep, out, url, name, trials, timeout=None, keep=False, quiet=True)
        wall = time.perf_counter() - start
    study = optuna.load_study(study_name=name, storage=url)
    done = sorted(t.datetime_complete for t in study.trials)
    gaps = [(b - a).total_seconds() for a, b in zip(done, done[1:])]
    last = gaps[-max(1, len(gaps) // 10):]
    return {"trials": trials, "wall": wall, "median": statistics.median(gaps), "last10%": statistics.median(last)}


def trial_paths_bench(root: Path, trials: int) -> dict[str, list[float]]:
    """Seconds per lab graft trial (graft + the `lab_skill_b` measure on 200 items), today's
    folder path (write the model, load it back) against the in-memory path on a warm target,
    alternated trial by trial in one process so both see the same machine."""
    import random

    from skillgraft.sweep.measures import MEASURES
    from skillgraft.sweep.warm import graft_trial
    from skillgraft.vectors import graft
    from skillgraft.vectors.recipe import GraftRecipe, graft_arguments

    measure, times = MEASURES["lab_skill_b"], {"folder": [], "in memory": []}
    scales = random.Random(0).sample(range(50, 150), trials)
    for number, scale in enumerate(scales):
        for path in ("folder", "in memory") if number % 2 else ("in memory", "folder"):
            recipe = GraftRecipe.model_validate({**GRAFT, "vectors": [{**GRAFT["vectors"][0], "scale": scale / 100}],
                                                 "output": str(root / f"paths-{number}-{path[0]}")})
            start = time.perf_counter()
            if path == "folder":
                graft(recipe.target, recipe.output, quiet=True, **graft_arguments(recipe))
                measure(recipe.output, recipe)
            else:
                model, _ = graft_trial(recipe)
                measure(model, recipe)
            times[path].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12, help="Trials of the worker comparison (0 skips it).")
    parser.add_argument("--overhead", default="10,1000", help="Trial counts of the overhead benchmark.")
    parser.add_argument("--postgres", default=None, help="A PostgreSQL URL to measure the overhead on too.")
    parser.add_argument("--paths", type=int, default=0, help="Lab graft trials of the folder vs in-memory "
                        "comparison (0 skips it).")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    try:
        print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        if args.paths:
            times = trial_paths_bench(root, args.paths)
            folder, memory = (statistics.median(times[k][1:]) for k in ("folder", "in memory"))
            print(f"\n| trial path | median s/trial (first excluded) | first trial s |\n|---|---|---|\n"
                  f"| folder (write + load) | {folder:.2f} | {times['folder'][0]:.2f} |\n"
                  f"| in memory (warm target) | {memory:.2f} | {times['in memory'][0]:.2f} |\n"
                  f"| ratio | {memory / folder:.2f}× | |", flush=True)
        if args.trials:
            rows = workers_bench(root, args.trials)
            print("\n| run | wall s | ratio |\n|---|---|---|")
            for label, seconds in rows:
                print(f"| {label} | {seconds:.1f} | {seconds / rows[0][1]:.2f} |")
        print("\n| storage | trials | wall s | median s/trial | median s/trial, last 10% |\n|---|---|---|---|---|")
        for storage in [None, args.postgres] if args.postgres else [None]:
            for n in [int(x) for x in args.overhead.split(",")]:
                r = overhead_bench(root, n, storage)
                print(f"| {'postgresql' if storage else 'sqlite (default)'} | {n} | {r['wall']:.1f} | "
                      f"{r['median']:.3f} | {r['last10%']:.3f} |", flush=True)
        print(f"\nuptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
