"""CLI verbs `eval` and `compare` (thin wrappers over `run_suite` and the HTML report).

Heavy imports happen inside the commands so `skillgraft --help` stays instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from skillgraft.errors import UserError

BACKEND_HELP = "auto (URL → endpoint, else transformers), transformers, endpoint or vllm"


def _overrides(max_new_tokens: int | None, chat: bool | None, seed: int | None, sample: bool | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if max_new_tokens is not None:
        out["max_new_tokens"] = max_new_tokens
    if chat is not None:
        out["chat"] = chat
    if seed is not None:
        out["seed"] = seed
    if sample is not None:
        out["do_sample"] = sample
    return out


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


def register(app: typer.Typer) -> None:
    """Attach `eval` and `compare` to the main app."""

    @app.command("eval")
    def eval_cmd(
        models: list[str] = typer.Argument(..., help="checkpoint folders or http(s)://…/v1 endpoint URLs"),
        suite: str = typer.Option(..., "--suite", "-s", help="suite YAML, or a built-in name (retention, arithmetic)"),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="results JSON (resumable via OUTPUT.partial.jsonl)"),
        as_json: bool = typer.Option(False, "--json", help="print the results JSON on stdout"),
        batch_size: int = typer.Option(8, "--batch-size", help="prompts per batch (speed only, never outputs)"),
        backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
        endpoint_model: Optional[str] = typer.Option(None, "--endpoint-model", help="served model name (default: first of GET /v1/models)"),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="load dtype: float32, bfloat16, float16"),
        device: Optional[str] = typer.Option(None, "--device", help="torch device, e.g. cuda:0"),
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="override the suite's max_new_tokens"),
        chat: Optional[bool] = typer.Option(None, "--chat/--raw", help="render raw prompts with the chat template"),
        sample: Optional[bool] = typer.Option(None, "--sample/--greedy", help="sampling (seeded) instead of greedy"),
        seed: Optional[int] = typer.Option(None, "--seed", help="sampling seed (recorded in the results)"),
        lm_eval: Optional[str] = typer.Option(None, "--lm-eval", help="also run lm-evaluation-harness TASKS (comma-separated)"),
    ) -> None:
        """Score MODELs on a suite: same prompts, same decoding; table + results JSON."""
        from skillgraft.evaluate.results import write_json_atomic
        from skillgraft.evaluate.runner import run_suite

        if lm_eval:
            from skillgraft.evaluate.lm_eval_bridge import require_lm_eval

            require_lm_eval()
        results = run_suite(models, suite, output=output, batch_size=batch_size, backend=backend,
                            endpoint_model=endpoint_model, dtype=dtype, device=device,
                            generation=_overrides(max_new_tokens, chat, seed, sample))
        if lm_eval:
            results["lm_eval"] = _lm_eval(models, lm_eval, batch_size, dtype, device)
            if output:
                write_json_atomic(output, results)
        print_table(results, sys.stderr if as_json else sys.stdout)
        if output and not as_json:
            print(f"results: {output}")
        if as_json:
            print(json.dumps(results, ensure_ascii=False))

    @app.command("compare")
    def compare_cmd(
        models: list[str] = typer.Argument(..., help="checkpoint folders or http(s)://…/v1 endpoint URLs"),
        prompts: Path = typer.Option(..., "--prompts", "-p", help="suite YAML, items JSONL, or text file (one prompt a line)"),
        output: Path = typer.Option(..., "--output", "-o", help="HTML report to write"),
        as_json: bool = typer.Option(False, "--json", help="print {report, scores} as JSON on stdout"),
        batch_size: int = typer.Option(8, "--batch-size", help="prompts per batch (speed only, never outputs)"),
        backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
        endpoint_model: Optional[str] = typer.Option(None, "--endpoint-model", help="served model name"),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="load dtype"),
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="tokens to generate per prompt"),
        chat: Optional[bool] = typer.Option(None, "--chat/--raw", help="render raw prompts with the chat template"),
        title: str = typer.Option("skillgraft comparison", "--title", help="page title"),
    ) -> None:
        """Side-by-side generations of MODELs on the same prompts, as a self-contained HTML page."""
        from skillgraft.evaluate.prompts import suite_from_prompts
        from skillgraft.evaluate.runner import run_suite
        from skillgraft.report import write_report

        if output.suffix.lower() not in (".html", ".htm"):
            raise UserError(f"--output {output}: the report is HTML; name it *.html")
        suite = suite_from_prompts(prompts)
        results = run_suite(models, suite, batch_size=batch_size, backend=backend, endpoint_model=endpoint_model,
                            dtype=dtype, generation=_overrides(max_new_tokens, chat, None, None))
        write_report(results, output, title=title)
        print_table(results, sys.stderr if as_json else sys.stdout)
        if as_json:
            print(json.dumps({"report": str(output), "scores": results["scores"]}, ensure_ascii=False))
        else:
            print(f"report: {output}")


def _lm_eval(models: list[str], tasks: str, batch_size: int, dtype: str | None, device: str | None) -> dict:
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
