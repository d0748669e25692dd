"""The `eval` verb: a thin wrapper over `run_suite` (the report verb `compare` lives in
`skillgraft.report.cli`). Heavy imports happen inside the command so `skillgraft --help` stays instant.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from skillgraft.clikit import command, emit_json, json_option, quiet_option, threads_option
from skillgraft.errors import UserError

BACKENDS = click.Choice(["auto", "transformers", "endpoint", "vllm"])
BACKEND_HELP = "auto (a URL → endpoint, else transformers), transformers, endpoint or vllm."


def generation_overrides(max_new_tokens: int | None, chat: bool | None, seed: int | None,
                         sample: bool | None) -> dict[str, Any]:
    """The decoding settings given on the command line (None: the suite's own)."""
    given = {"max_new_tokens": max_new_tokens, "chat": chat, "seed": seed, "do_sample": sample}
    return {key: value for key, value in given.items() if value is not None}


def language_codes(languages: str | None) -> list[str] | None:
    """`--languages en,ja` as checked ISO 639-1 codes."""
    if not languages:
        return None
    from skillgraft.evaluate.metrics.language import check_code

    try:
        return [check_code(code.strip().lower()) for code in languages.split(",") if code.strip()]
    except ValueError as exc:
        raise UserError(f"--languages: {exc}") from None


def print_table(results: dict[str, Any], stream) -> None:
    """Scores (headline metrics) as a rich table: a row per model and set."""
    from rich.console import Console
    from rich.table import Table

    scores = results["scores"]
    metrics = sorted({m for sets in scores.values() for per in sets.values() for m in per if "." not in m})
    table = Table(title=f"suite {results['settings']['suite']['name']}")
    for column in ["model", "set", *metrics]:
        table.add_column(column, justify="left" if column in ("model", "set") else "right")
    for model, sets in scores.items():
        for set_name, per in sets.items():
            cells = ["–" if per.get(m) is None else f"{per[m]:.3f}" for m in metrics]
            table.add_row(model, set_name, *cells)
    Console(file=stream, width=max(100, 24 * 2 + 12 * len(metrics))).print(table)


def model_options(f):
    """Options shared by `eval` and `compare`: how models are loaded and prompted."""
    for decorator in (
        click.option("--chat/--raw", "chat", default=None, help="Ask raw prompts through the chat template, or "
                     "as written (default: the suite's `chat:`; a suite that does not say uses the template "
                     "of each model that has one)."),
        click.option("--languages", default=None, metavar="CODES",
                     help="Languages to score in a suite with only_model_languages (the built-in retention), "
                          "e.g. en,ja (default: the models' card or tokenizer)."),
        click.option("--max-new-tokens", type=int, default=None, help="Override the suite's max_new_tokens."),
        click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
                     help="Load and compute dtype (default: the checkpoint's; on a CPU where its bfloat16/float16 "
                          "is slower than float32, float32)."),
        click.option("--endpoint-model", default=None, help="Served model name (default: the first of GET /v1/models)."),
        click.option("--backend", type=BACKENDS, default="auto", show_default=True, help=BACKEND_HELP),
        click.option("--batch-size", type=int, default=8, show_default=True,
                     help="Prompts per batch (speed only, never greedy outputs)."),
    ):
        f = decorator(f)
    return f


@command("eval")
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("-s", "--suite", required=True, help="Suite YAML, or a built-in name (retention, arithmetic, lab).")
@click.option("-o", "--out", "--output", "output", default=None,
              help="Results JSON (an interrupted run resumes from OUT.partial.jsonl).")
@json_option(help="Print the results JSON on stdout (the table goes to stderr).")
@model_options
@click.option("--device", default=None, help="Torch device, e.g. cuda:0.")
@click.option("--sample/--greedy", "sample", default=None, help="Seeded sampling instead of greedy decoding.")
@click.option("--seed", type=int, default=None, help="Sampling seed (recorded in the results).")
@click.option("--reference", default=None, metavar="MODEL",
              help="The model `kept` and `general_kl` compare with (default: the first MODEL); its answers are "
                   "computed once and cached.")
@click.option("--lm-eval", default=None, metavar="TASKS", help="Also run lm-evaluation-harness TASKS (comma-separated).")
@quiet_option
@threads_option
def eval_command(models, suite, output, as_json, chat, languages, max_new_tokens, dtype, endpoint_model, backend,
                 batch_size, device, sample, seed, reference, lm_eval, quiet):
    """Score MODELs (folders, Hugging Face ids, lab:NAME or http(s)://…/v1 endpoints) on a suite:
    the same prompts, the same decoding; a table and the results JSON."""
    from skillgraft.evaluate.results import write_json_atomic
    from skillgraft.evaluate.runner import run_suite

    if lm_eval:
        from skillgraft.evaluate.lm_eval_bridge import require_lm_eval

        require_lm_eval()
    results = run_suite(list(models), suite, output=output, batch_size=batch_size, backend=backend,
                        endpoint_model=endpoint_model, dtype=dtype, device=device,
                        generation=generation_overrides(max_new_tokens, chat, seed, sample), reference=reference,
                        languages=language_codes(languages), **({"log": None} if quiet else {}))
    if lm_eval:
        results["lm_eval"] = _lm_eval(models, lm_eval, batch_size, dtype, device)
        if output:
            write_json_atomic(output, results)
    if not (as_json and quiet):
        print_table(results, sys.stderr if as_json else sys.stdout)
    if output and not as_json:
        print(f"results: {output}")
    if as_json:
        emit_json(results)


def _lm_eval(models, tasks: str, batch_size: int, dtype: str | None, device: str | None) -> dict:
    from skillgraft.evaluate.backends.endpoint import is_endpoint
    from skillgraft.evaluate.backends.hf import load_pretrained
    from skillgraft.evaluate.lm_eval_bridge import run_lm_eval

    out = {}
    for name in models:
        if is_endpoint(name):
            raise UserError(f"--lm-eval: {name} is an endpoint; the harness runs on local checkpoints here")
        model, tokenizer = load_pretrained(name, dtype=dtype, device=device)
        out[name] = run_lm_eval(model, tokenizer, tasks, batch_size=batch_size)
    return out


def register(cli: click.Group) -> None:
    cli.add_command(eval_command)
