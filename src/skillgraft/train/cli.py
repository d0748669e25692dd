"""CLI verbs of the training layer: `train` and `data prep | augment | show`.

Thin wrappers: parse options, call into `skillgraft.data` / `skillgraft.train.run`, print.
Heavy imports stay inside the functions so `skillgraft --help` is instant.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer


def _echo_json(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def _stats_table(summary: dict) -> str:
    before, after, changes = summary["before"], summary["after"], summary["changes"]
    lines = [f"{'':14}{'before':>10}{'after':>10}"]
    for key in ("records", "chars", "mean_chars", "max_chars"):
        lines.append(f"{key:14}{before[key]:>10}{after[key]:>10}")
    lines.append("changes: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
    lines.append(f"train: {summary['train_records']} → {summary['train']}")
    if summary["validation"]:
        lines.append(f"validation: {summary['validation_records']} → {summary['validation']}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Prepare, augment and inspect fine-tuning data.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @app.command("train")
    def train_cmd(
        config: Path = typer.Argument(..., help="training config YAML (see recipes/)"),
        set_: list[str] | None = typer.Option(None, "--set", help="override a key: a.b=value (YAML value)"),
        json_out: bool = typer.Option(False, "--json", help="print one JSON summary on stdout"),
        resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint of this config"),
    ) -> None:
        """Fine-tune a model (LoRA, QLoRA or full) with transformers Trainer, per a YAML config."""
        from skillgraft.train.config import load_config
        from skillgraft.train.run import train

        cfg = load_config(config, set_ or [])
        summary = train(cfg, resume=resume)
        if os.environ.get("RANK", "0") != "0":  # distributed: only the main process reports
            return
        if json_out:
            _echo_json(summary)
            return
        last = summary["losses"][-1][1] if summary["losses"] else float("nan")
        first = summary["losses"][0][1] if summary["losses"] else float("nan")
        print(f"trained {summary['steps']} steps: loss {first:.4f} → {last:.4f}")
        for key in ("adapter_dir", "model_dir", "merged_dir"):
            if summary[key]:
                print(f"{key.replace('_dir', '')}: {summary[key]}")
        if summary["stopped"]:
            print(f"stopped early by the monitor: {summary['stopped']}")

    @data_app.command("prep")
    def prep_cmd(
        src: Path = typer.Argument(..., help="input: .txt (one example per line) or .jsonl"),
        out: Path = typer.Option(..., "-o", "--out", help="output JSONL (train split)"),
        normalise: str = typer.Option("seed002", help="width normalisation: seed002, nfkc, nfkc+seed002, none"),
        max_repeat: int = typer.Option(2, help="cap runs of one repeated character at this length (0: off)"),
        scrub: str = typer.Option("email,url,phone,handle", help="what to scrub, comma-separated ('' for nothing)"),
        delete: bool = typer.Option(False, "--delete",
                                    help="delete scrubbed spans instead of <EMAIL>-style placeholders"),
        near_dup: float = typer.Option(0.8, help="3-gram Jaccard similarity for near duplicates (1: exact only)"),
        validation: float = typer.Option(0.1, help="share of examples for the validation split"),
        seed: int = typer.Option(0, help="seed of the split"),
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """Clean a persona/knowledge corpus: widths, repeats, personal data, duplicates, split."""
        from skillgraft.data.prep import PrepOptions, run_prep

        kinds = tuple(k.strip() for k in scrub.split(",") if k.strip())
        options = PrepOptions(normalise=normalise, max_repeat=max_repeat, scrub=kinds, placeholders=not delete,
                              near_dup=near_dup, validation=validation, seed=seed)
        summary = run_prep(src, out, options)
        if json_out:
            _echo_json(summary)
        else:
            print(_stats_table(summary))

    @data_app.command("augment")
    def augment_cmd(
        facts: Path = typer.Argument(..., help="facts JSONL: {id, title, text, qa: [{question, answer}]}"),
        out: Path = typer.Option(..., "-o", "--out", help="output JSONL of {text, style, fact}"),
        styles: str = typer.Option("qa,article,interview,textbook",
                                   help="comma-separated: qa, article, interview, textbook, translate:LANG"),
        rewriter: str = typer.Option("template", help="template, openai (endpoint) or local (transformers model)"),
        endpoint: str | None = typer.Option(None, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"),
        model: str | None = typer.Option(None, help="model name at the endpoint, or a local model folder"),
        cache: Path | None = typer.Option(None, help="folder caching LLM calls (default: OUT.cache/)"),
        api_key_env: str = typer.Option("OPENAI_API_KEY", help="environment variable holding the API key"),
        max_new_tokens: int = typer.Option(512),
        temperature: float = typer.Option(0.0),
        original: bool = typer.Option(True, "--original/--no-original", help="keep each fact's own text too"),
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """Rewrite fact texts into several styles (seed 003: facts stick only when paraphrased)."""
        from skillgraft.data.augment import CachedRewriter, augment
        from skillgraft.data.records import write_jsonl

        style_list = [s.strip() for s in styles.split(",") if s.strip()]
        llm = None
        if rewriter != "template":
            llm = CachedRewriter(rewriter, model or "", cache or out.with_name(out.name + ".cache"),
                                 endpoint=endpoint, api_key_env=api_key_env, max_new_tokens=max_new_tokens,
                                 temperature=temperature)
        records = augment(facts, style_list, llm, include_original=original)
        write_jsonl(out, records)
        summary = {"output": str(out), "records": len(records), "styles": style_list, "rewriter": rewriter,
                   "llm_calls": llm.calls if llm else 0, "cache_hits": llm.hits if llm else 0}
        if json_out:
            _echo_json(summary)
        else:
            print(f"{len(records)} texts ({', '.join(style_list)}) → {out}"
                  + (f"; LLM calls {llm.calls}, cache hits {llm.hits}" if llm else ""))

    @data_app.command("show")
    def show_cmd(
        config: Path = typer.Argument(..., help="training config YAML"),
        set_: list[str] | None = typer.Option(None, "--set", help="override a key: a.b=value"),
        n: int = typer.Option(3, "-n", help="how many examples to show"),
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """Show training examples as tokens with their loss mask (what is learned is marked)."""
        from skillgraft.train.config import load_config
        from skillgraft.train.show import show_examples

        cfg = load_config(config, set_ or [])
        shown = show_examples(cfg, n)
        if json_out:
            _echo_json(shown)
            return
        for index, ex in enumerate(shown["examples"], 1):
            learned = sum(ex["learned"])
            print(f"example {index}: {len(ex['tokens'])} tokens, {learned} learned "
                  "(learned tokens in [brackets])")
            print(" ".join(f"[{t}]" if keep else t for t, keep in zip(ex["tokens"], ex["learned"])))
        print(f"format {shown['format']}, answer_only={shown['answer_only']}, bos={shown['bos']!r}, "
              f"eos={shown['eos']!r}, {shown['report']['examples']} examples, "
              f"{shown['report']['overlong']} over max_length, "
              f"{shown['report']['unknown_tokens']} unknown (unk) tokens",
              file=sys.stderr)
