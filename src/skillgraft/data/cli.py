"""`skillgraft data prep | augment | show`: thin wrappers over `skillgraft.data`.

Heavy imports stay inside the commands so `skillgraft --help` is instant.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import click

from skillgraft.clikit import emit_json, group, json_option, quiet_option

data = group("data", "Prepare, augment and inspect fine-tuning data.")
HELP = {"help_option_names": ["-h", "--help"]}


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


@data.command("prep", context_settings=HELP)
@click.argument("src", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Output JSONL (train split).")
@click.option("--normalise", default="seed002", show_default=True,
              help="Width normalisation: seed002, nfkc, nfkc+seed002 or none.")
@click.option("--max-repeat", type=int, default=2, show_default=True,
              help="Cap runs of one repeated character at this length (0: off).")
@click.option("--scrub", default="email,url,phone,handle", show_default=True,
              help="What to scrub, comma-separated ('' for nothing).")
@click.option("--delete", is_flag=True, help="Delete scrubbed spans instead of <EMAIL>-style placeholders.")
@click.option("--near-dup", type=float, default=0.8, show_default=True,
              help="3-gram Jaccard similarity above which texts are near duplicates (1: exact only).")
@click.option("--validation", type=float, default=0.1, show_default=True,
              help="Share of examples for the validation split.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
@json_option(help="Print one JSON summary on stdout.")
@quiet_option
def prep_command(src, out, normalise, max_repeat, scrub, delete, near_dup, validation, seed, as_json, quiet):
    """Clean a persona/knowledge corpus (.txt, one example a line, or .jsonl): widths, repeats,
    personal data, duplicates, then a train/validation split."""
    from skillgraft.data.prep import PrepOptions, run_prep

    kinds = tuple(k.strip() for k in scrub.split(",") if k.strip())
    options = PrepOptions(normalise=normalise, max_repeat=max_repeat, scrub=kinds, placeholders=not delete,
                          near_dup=near_dup, validation=validation, seed=seed)
    summary = run_prep(src, out, options)
    if as_json:
        emit_json(summary)
    elif not quiet:
        print(_stats_table(summary))


@data.command("augment", context_settings=HELP)
@click.argument("facts", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Output JSONL of {text, style, fact} records (qa-pairs: {question, answer, style, fact}).")
@click.option("--styles", default="qa,article,interview,textbook", show_default=True,
              help="Comma-separated: qa, article, interview, textbook, translate:LANG; qa-pairs adds the "
                   "facts' own QA pairs as question/answer records (train them with data.format: auto); "
                   "original alone writes only the facts' own texts (a k=1 file).")
@click.option("--rewriter", type=click.Choice(["template", "openai", "local"]), default="template",
              show_default=True, help="Templates (offline), an OpenAI-compatible endpoint, or a local model.")
@click.option("--endpoint", default=None, help="OpenAI-compatible base URL for --rewriter openai, "
              "e.g. http://127.0.0.1:8000/v1.")
@click.option("--model", default=None, help="Model name at the endpoint, or the local model (folder, Hugging Face "
              "id or lab:NAME) for --rewriter local.")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Folder caching LLM answers (default: OUT.cache/).")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Environment variable holding the endpoint's API key.")
@click.option("--max-new-tokens", type=int, default=512, show_default=True, help="Longest rewrite, in tokens.")
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0: greedy (reproducible).")
@click.option("--original/--no-original", default=True, show_default=True, help="Keep each fact's own text too.")
@click.option("--framing", type=click.Choice(["vary", "fixed"]), default="vary", show_default=True,
              help="Template rewrites: the words around each fact varied by record (a fixed frame is learned "
                   "and comes back in answers), or fixed (the lab's published studies).")
@json_option(help="Print one JSON summary on stdout.")
@quiet_option
def augment_command(facts, out, styles, rewriter, endpoint, model, cache, api_key_env, max_new_tokens, temperature,
                    original, framing, as_json, quiet):
    """Rewrite fact texts into several styles (seed 003: facts stick only when paraphrased)."""
    from skillgraft.data.augment import CachedRewriter, augment
    from skillgraft.data.records import write_jsonl

    style_list = [s.strip() for s in styles.split(",") if s.strip()]
    llm = None
    if rewriter != "template":
        llm = CachedRewriter(rewriter, model or "", cache or out.with_name(out.name + ".cache"), endpoint=endpoint,
                             api_key_env=api_key_env, max_new_tokens=max_new_tokens, temperature=temperature)
    records = augment(facts, style_list, llm, include_original=original, framing=framing)
    write_jsonl(out, records)
    by_style = dict(Counter(record["style"] for record in records))
    summary = {"output": str(out), "records": len(records), "by_style": by_style, "styles": style_list,
               "rewriter": rewriter, "llm_calls": llm.calls if llm else 0, "cache_hits": llm.hits if llm else 0}
    if as_json:
        emit_json(summary)
    elif not quiet:
        counts = ", ".join(f"{n} {style}" for style, n in by_style.items())
        print(f"{len(records)} records ({counts}) → {out}"
              + (f"; LLM calls {llm.calls}, cache hits {llm.hits}" if llm else ""))


@data.command("show", context_settings=HELP)
@click.argument("config")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key of the config.")
@click.option("-n", "n", type=int, default=3, show_default=True, help="How many examples to show.")
@json_option(help="Print the examples as one JSON object on stdout.")
def show_command(config, overrides, n, as_json):
    """Training examples of a training config, as tokens with their loss mask (what is learned)."""
    from skillgraft.data.show import show_examples
    from skillgraft.train.config import load_train_config

    shown = show_examples(load_train_config(config, list(overrides)), n)
    if as_json:
        emit_json(shown)
        return
    for index, ex in enumerate(shown["examples"], 1):
        learned = sum(ex["learned"])
        print(f"example {index}: {len(ex['tokens'])} tokens, {learned} learned (learned tokens in [brackets])")
        print(" ".join(f"[{t}]" if keep else t for t, keep in zip(ex["tokens"], ex["learned"])))
    print(f"format {shown['format']}, answer_only={shown['answer_only']}, bos={shown['bos']!r}, "
          f"eos={shown['eos']!r}, {shown['report']['examples']} examples, "
          f"{shown['report']['overlong']} over max_length, {shown['report']['unknown_tokens']} unknown (unk) tokens",
          file=sys.stderr)


def register(cli: click.Group) -> None:
    cli.add_command(data)
