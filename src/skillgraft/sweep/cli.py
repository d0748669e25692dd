"""`skillgraft sweep run|report|check`: recipe search on Optuna, and its points checked on held-out data.

Heavy imports (optuna, torch) happen inside the commands, so `--help` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from skillgraft.clikit import command, emit_json, force_option, group, json_option, quiet_option, threads_option

sweep_group = group("sweep", "Search recipe settings with Optuna; report the trade-offs found.")


def summary(study, out: Path, url: str) -> dict:
    """The `--json` object of `sweep run` (and what the text summary prints)."""
    from collections import Counter

    from skillgraft.sweep.results import front_entries
    from skillgraft.sweep.study import shown

    return {"dir": str(out), "storage": shown(url), "study": study.study_name,
            "directions": [d.name.lower() for d in study.directions],
            "trials": dict(Counter(t.state.name for t in study.trials)), "best": front_entries(study, out)}


def print_summary(result: dict) -> None:
    from skillgraft.sweep.results import format_params

    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result["trials"].items()))
    print(f"study {result['study']} in {result['storage']}: {counts}")
    title = "best trial" if len(result["directions"]) == 1 else "Pareto front"
    print(f"{title} ({', '.join(result['directions'])}):")
    for entry in result["best"]:
        values = ", ".join(f"{v:.4g}" for v in entry["values"])
        params = format_params(entry["params"])
        print(f"  #{entry['number']}: {values}  |  {params}")
        print(f"      rebuild: {entry['rebuild']}")
    print(f"report: skillgraft sweep report {result['dir']}")


@command("run")
@click.argument("config")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Sweep folder: the study (study.db), trials/NNNN/ and the report.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of the sweep config (dotted; base.lr=1e-4 for an inline base).")
@click.option("--storage", default=None, metavar="URL",
              help="Any Optuna RDB URL (postgresql://…, mysql://…) to share one study between machines; "
                   "default: sqlite in the sweep folder.")
@click.option("--study", "study_name", default=None, help="Study name in the storage (default: the folder's name).")
@click.option("--n-trials", type=int, default=None, help="Run N more trials in this invocation (default: the "
              "config's n_trials).")
@click.option("--workers", type=int, default=1, show_default=True, help="Local worker processes on the storage.")
@click.option("--timeout", type=float, default=None, metavar="S", help="Stop starting trials after S seconds.")
@click.option("--keep", is_flag=True, help="Keep every trial's model output (default: only the best / the front).")
@click.option("--new", is_flag=True, help="Delete the study (and its trials/) and start afresh.")
@click.option("--allow-changed-data", is_flag=True, help="Continue a study although a data, suite or prompt file "
              "its recipe names changed since it started (default: refused).")
@json_option
@quiet_option
@threads_option
def run_command(config, out, overrides, storage, study_name, n_trials, workers, timeout, keep, new,
                allow_changed_data, as_json, quiet):
    """Run (or continue) the sweep described by CONFIG; rerunning the same command resumes it."""
    from skillgraft.sweep.workers import run_sweep

    study, url = run_sweep(config, list(overrides), out, storage=storage, name=study_name, n_trials=n_trials,
                           workers=workers, timeout=timeout, keep=keep, new=new,
                           allow_changed_data=allow_changed_data, quiet=quiet)
    result = summary(study, out, url)
    emit_json(result) if as_json else print_summary(result)


@command("report")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--storage", default=None, metavar="URL", help="The storage the sweep used, if not the default.")
@click.option("--study", "study_name", default=None, help="Study name (default: the folder's name).")
@json_option
def report_command(folder, storage, study_name, as_json):
    """Write FOLDER/report/: trials.csv, the best trials / Pareto front, importances and plots in
    one self-contained report.html."""
    from skillgraft.sweep.report import write_sweep_report

    result = write_sweep_report(folder, storage, study_name)
    if as_json:
        emit_json(result)
        return
    print(result["table"], file=sys.stdout)
    print(result["importance_text"])
    print(f"report: {result['html']}\ncsv: {result['csv']}")


@command("check")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--trials", required=True, metavar="N,N,…", help="Trial numbers to check (choose them by their tune "
              "numbers only).")
@click.option("--suite", required=True, help="The probe suite with `tune` and `heldout` sets.")
@click.option("--score", required=True, metavar="NAME=METRIC",
              help="The probe metric to report, e.g. keyword=keyword or persona=style.marker.persona.")
@click.option("--untrained", required=True, metavar="MODEL",
              help="The model before any training: `kept` counts the retention_check questions it answers right.")
@click.option("--seed", "seeds", multiple=True, required=True, metavar="N[:MODELS_DIR]",
              help="Seeds to run each trial with (repeat); grafts: the folder of that seed's models (a kit's models/).")
@click.option("--unseen", default=None, metavar="SUITE[:MODELS_DIR]", help="Also check each trial on the unseen "
              "facts (first seed; --unseen-seeds), scored on this suite's `unseen` set: training trials trained on them, graft trials "
              "rebuilt on MODELS_DIR (models trained on them, laid out as a kit's models/).")
@click.option("--unseen-seeds", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Check training trials on the unseen facts with the first N seeds (each one more training).")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Check folder: every step's model, evaluation and log; rows.json and table.md.")
@click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
              help="Torch threads of every training and evaluation step (default: each step takes the cores "
              "other work leaves free).")
@json_option
@quiet_option
def check_command(folder, trials, suite, score, untrained, seeds, unseen, unseen_seeds, out, threads, as_json, quiet):
    """Check trials of the sweep in FOLDER on what no trial saw: the held-out probe half,
    retention_check, other seeds (and unseen facts), run as a user runs them. Every step's file is
    reused, so rerunning the command continues a check cut short."""
    from skillgraft.errors import UserError
    from skillgraft.sweep.check import check, parse_seed

    try:
        numbers = [int(number) for number in trials.split(",")]
    except ValueError:
        raise UserError(f"--trials {trials!r}: expected trial numbers separated by commas, e.g. 0,1,12") from None
    say = (lambda line: None) if quiet or as_json else (lambda line: print(line, file=sys.stderr, flush=True))
    result = check(folder, numbers, suite, score, untrained, [parse_seed(seed) for seed in seeds], out,
                   unseen=unseen, say=say, threads=threads, unseen_seeds=unseen_seeds)
    if as_json:
        emit_json(result)
        return
    print(result["table"])
    print(f"table: {Path(result['out']) / 'table.md'}", file=sys.stderr)


@command("knowledge-kit")
@click.option("--seed", type=int, default=0, show_default=True, help="World and training seed.")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Kit folder to write.")
@force_option(help="Replace the kit folder if skillgraft wrote it.")
@quiet_option
def knowledge_kit_command(seed, out, force, quiet):
    """Write the knowledge lab's injection as a training config + data (a base model for one seed),
    for recipes/sweeps/lab-knowledge.yaml."""
    from skillgraft.lab.kernels import pin_cpu_kernels

    pin_cpu_kernels()   # the kit's base is a lab training cell: the same kernels as `lab knowledge`
    from skillgraft.sweep.knowledge_kit import write_kit

    print(f"kit: {write_kit(out, seed, force=force, quiet=quiet)}")


@command("real-kit")
@click.option("--seed", type=int, default=0, show_default=True, help="Training seed of the recipes (and the CP text's draw).")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Kit folder to write.")
@click.option("--models", is_flag=True, help="Also train CP, the persona, the persona with replay and the "
              "knowledge winner (about 27 minutes on one core) and write graft.yaml and knowledge-graft.yaml, for "
              "recipes/sweeps/real-graft*.yaml and real-knowledge-graft.yaml.")
@click.option("--model", default="lab:smollm2", show_default=True, help="The chat model the recipes train "
              "(lab:smollm2: `skillgraft lab fetch` first).")
@click.option("--max-length", type=click.IntRange(min=2), default=None, help="Tokens per training text for a "
              "model with a short context (longer texts are truncated); default: the recipes' 512.")
@force_option(help="Replace the kit folder if skillgraft wrote it.")
@quiet_option
def real_kit_command(seed, out, models, model, max_length, force, quiet):
    """Write the real-model studies' recipes, data and suites, for recipes/sweeps/real-*.yaml."""
    from skillgraft.sweep.real_kit import write_kit

    print(f"kit: {write_kit(out, seed, model=model, max_length=max_length, models=models, force=force, quiet=quiet)}")


sweep_group.add_command(run_command)
sweep_group.add_command(report_command)
sweep_group.add_command(check_command)
sweep_group.add_command(knowledge_kit_command)
sweep_group.add_command(real_kit_command)


def register(cli: click.Group) -> None:
    cli.add_command(sweep_group)
