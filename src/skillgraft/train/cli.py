"""The `train` verb: a thin wrapper over `skillgraft.train.run.train`.

Heavy imports stay inside the command so `skillgraft --help` is instant.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from skillgraft.clikit import command, emit_json, force_option, json_option, quiet_option, threads_option


def print_summary(summary: dict, as_json: bool) -> None:
    """What `train` (and `run` on a training config) prints: the JSON summary or a few lines."""
    if os.environ.get("RANK", "0") != "0":  # distributed: only the main process reports
        return
    if as_json:
        emit_json(summary)
        return
    first = summary["losses"][0][1] if summary["losses"] else float("nan")
    last = summary["losses"][-1][1] if summary["losses"] else float("nan")
    print(f"trained {summary['steps']} steps: loss {first:.4f} → {last:.4f}")
    for key in ("adapter_dir", "model_dir", "merged_dir"):
        if summary[key]:
            print(f"{key.replace('_dir', '')}: {summary[key]}")
    if summary["stopped"]:
        print(f"stopped early by the monitor: {summary['stopped']}")


@command("train")
@click.argument("config")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key, dotted for nested keys (lora.r=32); the value is YAML (repeatable).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint of this config.")
@force_option(help="Replace an earlier run in output_dir (only what skillgraft train wrote there).")
@click.option("-o", "--out", default=None, type=click.Path(path_type=Path),
              help="Output folder (the config's output_dir; relative to the current directory).")
@json_option(help="Print one JSON summary on stdout.")
@quiet_option
@threads_option
def train_command(config, overrides, resume, force, out, as_json, quiet):
    """Fine-tune a model (LoRA, QLoRA or full) with transformers Trainer, per a YAML config
    (see recipes/; relative paths in it are relative to its folder)."""
    from skillgraft.checkpoint.resolve import resolve_model
    from skillgraft.train.config import load_train_config
    from skillgraft.train.dataset import check_data

    overrides = list(overrides)
    if out is not None:  # a YAML string: any path, quoted
        overrides.append(f"output_dir={json.dumps(str(out.resolve()))}")
    if quiet:
        overrides.extend(["progress=false", "heartbeat=0"])
    loaded = load_train_config(config, overrides)
    check_data(loaded)                    # an empty or malformed file fails before any model is touched
    resolve_model(loaded.model, "model")  # a missing model fails before transformers is imported
    from skillgraft.train.run import train

    summary = train(loaded, resume=resume, force=force)
    print_summary(summary, as_json)


def register(cli: click.Group) -> None:
    cli.add_command(train_command)
