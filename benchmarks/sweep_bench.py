"""Sweep benchmarks (issue 13), printed as tables.

1. Workers: N equal-cost lab graft trials (`skillgraft sweep run`, one torch thread per
   process) with one worker and with two on the same SQLite storage; goal ≤ 0.6× the wall time.
2. The sweep's own cost per trial: the same machinery (sampling, recipe materialisation, the
   trial folder and manifest, storage writes, tidying outputs) with the recipe and its
   evaluation replaced by no-ops, at 10 and 1,000 trials, on SQLite and (with --postgres URL)
   PostgreSQL; goal: median < 0.5 s.

3. Trial paths: lab graft trials written to a folder and loaded back (the path before
   in-memory trials) against grafted in memory on a warm target, alternated in one process.

4. With --real WORK: the SmolLM2 graft trial (persona vector onto CP, style + retention_tune_kl),
   in memory against through a folder, each part timed; goal ≤ 20 s on the idle 2-core machine.

    PYTHONPATH=src python benchmarks/sweep_bench.py [--trials 12] [--overhead 10,1000] [--postgres URL] [--paths 12]
    PYTHONPATH=src python benchmarks/sweep_bench.py --trials 0 --overhead 10 --real WORK [--real-trials 5]

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


def workers_bench(root: Path, trials: int) -> list[tuple[str, float, float]]:
    """(label, wall seconds, trials per second once every worker runs) with one worker and two.
    The steady rate counts the trials completed after the last worker's first one: what a
    second worker adds once its own start-up (imports, loading the target) is paid."""
    import optuna

    skillgraft = str(Path(sys.executable).with_name("skillgraft"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    path = config(root / "workers.yaml", trials)
    rows = []
    for workers in (1, 2):
        out = root / f"w{workers}"
        start = time.perf_counter()
        subprocess.run([skillgraft, "sweep", "run", str(path), "-o", str(out), "--workers", str(workers), "--json"],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        done = optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}").trials
        by_host: dict[str, list] = {}
        for t in done:
            by_host.setdefault(t.user_attrs["trial"]["host"], []).append(t.datetime_complete)
        since = max(min(times) for times in by_host.values())   # every worker has finished one trial
        later = sorted(t.datetime_complete for t in done if t.datetime_complete > since)
        rate = len(later) / max((later[-1] - since).total_seconds(), 1e-9) if later else float("nan")
        rows.append((f"{workers} worker{'s' * (workers > 1)} ({len(by_host)} ran trials), {trials} trials", wall, rate))
    return rows


def overhead_bench(root: Path, trials: int, storage: str | None) -> dict:
    """Per-trial seconds of everything but the recipe and its evaluation (both no-ops here)."""
    import optuna

    from skillgraft.sweep import trial as trial_module
    from skillgraft.sweep.config import load_sweep
    from skillgraft.sweep.study import prepare_study
    from skillgraft.sweep.workers import Budget, optimize

    def no_recipe(recipe, sweep, on_probe):
        Path(recipe.output).mkdir(parents=True)
        (Path(recipe.output) / "skillgraft.json").write_text("{}")
        return recipe.output, None

    out = root / f"overhead-{trials}-{'pg' if storage else 'sqlite'}"
    sweep = load_sweep(config(root / "overhead.yaml", trials))
    name = f"bench-{trials}-{time.time_ns()}"
    url = prepare_study(sweep, out, storage, name, new=False)
    counter = iter(range(10**9))

    def fake_scores(entries, model_dir, recipe, batch_size=8):  # a spread of values, so the front keeps changing
        n = next(counter)
        return [n * 37 % 97 / 97, n * 31 % 89 / 89]

    with mock.patch.object(trial_module, "_run_recipe", no_recipe), \
            mock.patch.object(trial_module, "evaluate", fake_scores):
        start = time.perf_counter()
        optimize(sweep, out, url, name, Budget(trials), timeout=None, keep=False, quiet=True)
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

    from skillgraft.sweep.measures import registry
    from skillgraft.sweep.warm import graft_trial
    from skillgraft.vectors import graft
    from skillgraft.vectors.recipe import GraftRecipe, graft_arguments

    measure, times = registry()["lab_skill_b"], {"folder": [], "in memory": []}
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


def real_trial_bench(root: Path, work: Path, trials: int, batch_size: int) -> dict:
    """The SmolLM2 graft trial of a persona sweep: the persona vector (`runs/persona/merged` −
    the instruct model) onto CP (`runs/cp/model`), scored on the persona suite's style (30
    prompts, 48 new tokens) and on `retention_tune_kl` (130 questions, general_kl against CP),
    in memory on a warm target against written to a folder and evaluated from it, alternated;
    with each part's seconds and this process's peak RSS (a warm worker: the target, two
    vectors' headers, the reference answers). WORK is a keep-study folder
    (`python benchmarks/keep_study.py WORK --only persona,cp`)."""
    import random
    import resource

    from skillgraft.lab.real.model import GGUF_SHA256, default_cache
    from skillgraft.sweep.config import Objective
    from skillgraft.sweep.trial import evaluate
    from skillgraft.sweep.warm import graft_trial
    from skillgraft.vectors import graft
    from skillgraft.vectors.recipe import GraftRecipe, graft_arguments

    base = default_cache() / f"model-{GGUF_SHA256[:12]}"
    objectives = [Objective(suite=str(work / "suites" / "persona.yaml"), set="persona", metric="style.marker.persona"),
                  Objective(suite="retention_tune_kl", set="retention_tune", metric="general_kl", direction="minimize")]
    rows: dict[str, list[dict]] = {"folder": [], "in memory": []}
    scales = random.Random(0).sample(range(50, 150), trials)
    for number, scale in enumerate(scales):
        for path in ("folder", "in memory") if number % 2 else ("in memory", "folder"):
            recipe = GraftRecipe.model_validate({
                "kind": "graft", "target": str(work / "runs" / "cp" / "model"),
                "vectors": [{"base": str(base), "skilled": str(work / "runs" / "persona" / "merged"),
                             "scale": scale / 100}], "output": str(root / f"real-{number}-{path[0]}")})
            start = time.perf_counter()
            if path == "folder":
                graft(recipe.target, recipe.output, quiet=True, **graft_arguments(recipe))
                model = recipe.output
            else:
                model, _ = graft_trial(recipe)
            grafted = time.perf_counter()
            parts = []
            for objective in objectives:
                evaluate([objective], model, recipe, batch_size)
                parts.append(time.perf_counter() - sum(parts) - grafted)
            rows[path].append({"total": time.perf_counter() - start, "graft": grafted - start,
                               "style": parts[0], "retention": parts[1]})
            shutil.rmtree(recipe.output, ignore_errors=True)
    rows["rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12, help="Trials of the worker comparison (0 skips it).")
    parser.add_argument("--overhead", default="10,1000", help="Trial counts of the overhead benchmark.")
    parser.add_argument("--postgres", default=None, help="A PostgreSQL URL to measure the overhead on too.")
    parser.add_argument("--paths", type=int, default=0, help="Lab graft trials of the folder vs in-memory "
                        "comparison (0 skips it).")
    parser.add_argument("--real", default=None, metavar="WORK", help="A keep-study folder: time SmolLM2 graft "
                        "trials (persona vector onto CP) in memory and through a folder.")
    parser.add_argument("--real-trials", type=int, default=5, help="Trials of each path with --real.")
    parser.add_argument("--batch-size", type=int, default=32, help="Evaluation batch size with --real.")
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
        if args.real:
            rows = real_trial_bench(root, Path(args.real), args.real_trials, args.batch_size)
            print(f"\n| SmolLM2 graft trial, batch {args.batch_size} (first excluded) | total s | graft s | style s "
                  f"| retention_tune_kl s | first trial s |\n|---|---|---|---|---|---|")
            for path in ("folder", "in memory"):
                median = {k: statistics.median(r[k] for r in rows[path][1:]) for k in rows[path][0]}
                print(f"| {path} | {median['total']:.1f} | {median['graft']:.1f} | {median['style']:.1f} | "
                      f"{median['retention']:.1f} | {rows[path][0]['total']:.1f} |")
            print(f"\npeak RSS of this process (a warm worker and the folder path's loads): {rows['rss_gb']:.2f} GB",
                  flush=True)
        if args.trials:
            rows = workers_bench(root, args.trials)
            print("\n| run | wall s | wall ratio | trials/s once all workers run | rate ratio |\n|---|---|---|---|---|")
            for label, seconds, rate in rows:
                print(f"| {label} | {seconds:.1f} | {seconds / rows[0][1]:.2f} | {rate:.2f} | {rate / rows[0][2]:.2f} |")
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
