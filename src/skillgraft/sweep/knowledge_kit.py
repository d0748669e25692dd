"""`skillgraft sweep knowledge-kit --seed N -o KIT`: the knowledge lab's injection, written as a
training config and its data, so a sweep can search it with `skillgraft train` as every user
would for their own facts.

    KIT/base/             the five-phrasing (pronoun, k=5) model after stage 1 and 2 of
                          `skillgraft lab knowledge` (the model docs/knowledge.md injects into)
    KIT/inject-kK.txt     the injection corpus with K styled texts per new person (K = 1..5):
                          the study's injected half plus its replay half, one text a line
    KIT/unrelated.txt     1,000 unrelated texts (for `data.mix_in`)
    KIT/general.txt       the old held-out people's biographies (the retention monitor's text)
    KIT/recipe.yaml       the hand-set injection of docs/knowledge.md's `inject-k5-into-k5`
                          cell: full fine-tuning, lr 1e-3 cosine, 200 steps of 32

Every path in recipe.yaml is relative to KIT, so `--set base=KIT/recipe.yaml` moves a sweep to
another seed's kit. Unlike the study (13 views per unrelated text), `data.mix_in` adds each
unrelated text once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from skillgraft.checkpoint.manifest import write_manifest
from skillgraft.checkpoint.publish import AtomicFolder, check_output

STYLES = 5


def hand_set_recipe() -> dict:
    from skillgraft.lab.knowledge.conditions import INJECT as budget

    return {
        "kind": "train", "model": "./base", "method": "full", "lr": budget.lr, "max_steps": budget.steps,
        "batch_size": budget.batch, "warmup_steps": budget.warmup, "scheduler": "cosine", "seed": 0,
        "output_dir": "out", "save_steps": 100000,
        "data": {"train": f"inject-k{STYLES}.txt", "format": "text", "max_length": 64,
                 "mix_in": {"path": "unrelated.txt", "n": 0, "seed": 0}},
        "lora": {"r": 16, "alpha": 32, "targets": "knowledge"},
        "monitor": {"every_steps": 50, "general_text": "general.txt", "min_retention": 0.0, "action": "warn"},
    }


def write_kit(out: Path, seed: int, *, force: bool = False, quiet: bool = False) -> Path:
    """Build the base model (one pretraining cell of the study: ~96 s of one core in
    docs/knowledge.md, 19 min on this machine under load 12-16) and write the kit folder."""
    from skillgraft.lab.knowledge import conditions as C
    from skillgraft.lab.knowledge import world as W
    from skillgraft.lab.knowledge.study import Cell, run_pretrain_cell
    from skillgraft.lab.train import set_threads

    out = Path(out)
    check_output(out, [], force=force)
    set_threads()
    world = W.make_world(seed)
    with AtomicFolder(out, force=force) as temp:
        if not quiet:
            print(f"[knowledge-kit] seed {seed}: training the pronoun k=5 base (stage 1 + 2)", file=sys.stderr)
        run_pretrain_cell(Cell("pronoun-k5", seed, "pretrain", 5, False), C.StudyBudget(), temp / "models",
                          f"skillgraft sweep knowledge-kit --seed {seed}", keep_state=False)
        (temp / "models" / f"pronoun-k5-seed{seed}").rename(temp / "base")
        (temp / "models").rmdir()
        for k in range(1, STYLES + 1):
            docs, _ = C.injection_docs(world, k, 0, C.INJECT, seed, base=(5, False))
            (temp / f"inject-k{k}.txt").write_text("\n".join(docs) + "\n")
        (temp / "unrelated.txt").write_text("\n".join(W.unrelated_texts(1000, seed)) + "\n")
        general = [b for p in world.test_people for b in W.biographies(p, 5, False, world.seed)]
        (temp / "general.txt").write_text("\n".join(general) + "\n")
        (temp / "recipe.yaml").write_text(yaml.safe_dump(hand_set_recipe(), sort_keys=False))
        write_manifest(temp, kind="kit", inputs=[], options={"seed": seed, "world": "lab knowledge"})
    return out
