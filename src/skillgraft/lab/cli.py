"""`skillgraft lab ...` verbs: build the lab models, run the lab demo, show the world.

Heavy imports happen inside the commands so `skillgraft --help` stays instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Attach the `lab` sub-command group to the main app."""
    lab_app = typer.Typer(help="The lab world: tiny two-language models that show a skill vector at work.",
                          no_args_is_help=True)

    @lab_app.command("build")
    def build_command(
        out: Path = typer.Option(Path("lab-models"), "--out", help="Folder to write base, cp, skilled, "
                                 "nonskill, upper and lab.json into (published by rename)."),
        seed: int = typer.Option(0, "--seed", min=0, help="Seed of the world, initialisation and data order."),
        force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
        as_json: bool = typer.Option(False, "--json", help="Print the build record as one JSON object."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    ) -> None:
        """Train the lab's models from scratch (about 2–10 minutes on 2 CPU cores)."""
        from skillgraft.lab.build import build

        command = f"skillgraft lab build --seed {seed}"
        record = build(out, seed, force=force, quiet=quiet, command=command)
        if as_json:
            print(json.dumps(record))
        else:
            rel = record["reliability"]
            print(f"built {out} (seed {seed}) in {record['seconds']} s; skilled held-out A exact match "
                  f"{rel['heldout_A_exact_match'][-1]:.3f} after {rel['extra_rounds']} extra base round(s)",
                  file=sys.stderr)

    @lab_app.command("demo")
    def demo_command(
        out: Optional[Path] = typer.Option(None, "--out", help="Keep vectors, grafted models and generations here."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random-direction control and the eval sample."),
        models: Optional[Path] = typer.Option(None, "--models", help="Use a `lab build` folder instead of the "
                                              "shipped checkpoints."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """The graft demo (same as `skillgraft demo`), optionally on your own `lab build` output."""
        from skillgraft.lab.demo import SHIPPED, run_demo

        result = run_demo(out, seed=seed, as_json=as_json, root=models or SHIPPED)
        if as_json:
            print(json.dumps(result))

    @lab_app.command("sample")
    def sample_command(
        seed: int = typer.Option(0, "--seed"),
        n: int = typer.Option(3, "--n", min=1, max=100),
    ) -> None:
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

    from skillgraft.lab.knowledge.cli import register as register_knowledge

    register_knowledge(lab_app)
    from skillgraft.lab.real.cli import register as register_real

    register_real(lab_app)
    app.add_typer(lab_app, name="lab")
