"""`skillgraft lab knowledge`: the knowledge-injection study as a command (issue 7).

Kept apart from `skillgraft.lab.cli` so the study's options live with the study; heavy
imports happen inside the command so `skillgraft --help` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from skillgraft.clikit import command, emit_json, force_option, json_option, quiet_option

MAX_SEEDS = 20


def table(rows: list[dict]) -> str:
    """Memorisation and extraction side by side, one line per cell and seed.

    For pretraining cells "memorised" is measured after stage 1 (the facts were stored), for
    injection cells on the final model; results.json has the other measurements too."""
    lines = [f"{'condition':<28} {'k':>2} {'seed':>4} {'memorised':>9} {'extracted':>9} {'n':>4}"]
    for r in rows:
        lines.append(f"{r['condition']:<28} {r['k']:>2} {r['seed']:>4} {r['memorization']:>9.3f} "
                     f"{r['extraction']:>9.3f} {r['n']:>4}")
    return "\n".join(lines)


@command("knowledge")
@click.option("--seeds", type=int, default=None, help="Number of seeds (0..N-1); default 3, or 1 with --fast.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Write results.json, generations.jsonl, plots/ and skillgraft.json here (published by rename).")
@click.option("--fast", is_flag=True, help="Only names-in-every-sentence k=1 vs k=5 at seed 0, with the study's "
              "budgets (about 2 minutes on 2 CPU cores).")
@force_option(help="Replace a non-empty --out folder written by an earlier study.")
@click.option("--resume", is_flag=True, help="Continue a study that failed or was stopped from the cells it "
              "finished (kept in OUT.finished-cells/); the options must be the same.")
@click.option("--save-models", is_flag=True, help="Also keep every cell's final model under --out/models "
              "(plain transformers folders, ~0.75 MB each).")
@json_option
@quiet_option
@click.option("--jobs", type=int, default=None, help="Worker processes (one torch thread each); default: one per "
              "CPU, at most 8. Results do not depend on it.")
def knowledge_command(seeds, out, fast, force, resume, save_models, as_json, quiet, jobs):
    """Memorised vs extractable knowledge: phrasings, injection, unrelated texts, LoRA targets."""
    from skillgraft.errors import UserError
    from skillgraft.lab.kernels import pin_cpu_kernels

    pin_cpu_kernels()   # before any tensor operation; the worker processes inherit it
    from skillgraft.lab.workers import check_counts, check_out, default_jobs

    n = seeds if seeds is not None else (1 if fast else 3)
    check_counts(n, jobs, MAX_SEEDS)
    from skillgraft.lab.knowledge.study import FAST, Plan, run_study

    check_out(out, force)
    if save_models and out is None:
        raise UserError("--save-models needs --out DIR")
    command = "skillgraft lab knowledge" + (" --fast" if fast else "") + (f" --seeds {n}" if seeds else "")
    payload = run_study(FAST if fast else Plan(), list(range(n)), out, force=force, quiet=quiet,
                        command=command, save_models=save_models, jobs=jobs or default_jobs(), resume=resume)
    if as_json:
        emit_json(payload)
    else:
        print(table(payload["results"]))
        print(f"{payload['conclusion']} ({payload['seconds']} s)")
        if out is not None:
            print(f"wrote {out}", file=sys.stderr)
