"""The `compare` verb: side-by-side generations of several models as one HTML page.

Heavy imports happen inside the command so `skillgraft --help` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from skillgraft.clikit import command, emit_json, json_option, quiet_option, threads_option
from skillgraft.errors import UserError
from skillgraft.evaluate.cli import generation_overrides, language_codes, model_options, print_table


@command("compare")
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("-p", "--prompts", required=True, type=click.Path(path_type=Path),
              help="Suite YAML, items JSONL, or a text file (one prompt a line).")
@click.option("-o", "--out", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="HTML report to write.")
@click.option("--title", default="skillgraft comparison", show_default=True, help="Page title.")
@json_option(help="Print {report, scores} as JSON on stdout.")
@model_options
@quiet_option
@threads_option
def compare_command(models, prompts, output, title, as_json, chat, languages, max_new_tokens, dtype, endpoint_model,
                    backend, batch_size, quiet):
    """Side-by-side generations of MODELs on the same prompts, as a self-contained HTML page."""
    from skillgraft.evaluate.prompts import suite_from_prompts
    from skillgraft.evaluate.runner import run_suite
    from skillgraft.report import write_report

    if output.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"-o {output}: the report is HTML; name it *.html")
    suite = suite_from_prompts(prompts)
    results = run_suite(list(models), suite, batch_size=batch_size, backend=backend, endpoint_model=endpoint_model,
                        dtype=dtype, generation=generation_overrides(max_new_tokens, chat, None, None),
                        languages=language_codes(languages), **({"log": None} if quiet else {}))
    write_report(results, output, title=title)
    if not (as_json and quiet):
        print_table(results, sys.stderr if as_json else sys.stdout)
    if as_json:
        emit_json({"report": str(output), "scores": results["scores"]})
    else:
        print(f"report: {output}")


def register(cli: click.Group) -> None:
    cli.add_command(compare_command)
