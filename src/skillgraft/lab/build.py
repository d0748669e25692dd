"""`lab build`: train the lab's five models from scratch for one seed, reproducibly.

Models (all share one word-level tokenizer):
- `base`: pretrained on language A text (contexts, questions, verbose answers only);
- `skilled`: base + answer-only fine-tuning on the skill in A (names from the fine-tuning pool);
- `cp`: base continued-pretrained on 85% language B + 15% code-switched text;
- `nonskill`: base + the same fine-tuning budget on a different task (echo the first
  statement) — the source of the "non-skill vector" control;
- `upper`: cp + the skill fine-tuning in B — what direct training in B reaches.

Reliability rule (applied identically to every seed; never seed picking): after the skill
fine-tuning, the skilled model is scored on held-out language-A items (names unseen in
fine-tuning). If exact match is below `RELIABILITY_THRESHOLD`, the base model is trained
for `EXTRA_BASE.steps` more steps on fresh language-A text and the skill fine-tuning is
redone from the longer-trained base; at most `MAX_EXTRA_ROUNDS` times. CP, nonskill and
upper are built only from the final base. How many rounds were needed is recorded in
`lab.json` and in every model's `skillgraft.json`.

Output: one folder per model (a plain transformers checkpoint with its manifest and model
card), `lab.json` (the build record) and the build's own manifest (kind `lab-build`, the
models as parts), all written by `checkpoint.write_manifest`, so `skillgraft verify` checks
the whole build.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from skillgraft.checkpoint import AtomicFolder, Card, check_output, write_manifest
from skillgraft.lab import world as W
from skillgraft.lab.train import (MODEL_SHAPE, Budget, new_model, save_model, set_threads, train_lm,
                                  train_sft)

BASE = Budget(steps=2000, batch=32, lr=3e-3, warmup=100)
EXTRA_BASE = Budget(steps=1000, batch=32, lr=1.5e-3, warmup=50)
CP = Budget(steps=1000, batch=32, lr=2e-3, warmup=50)
SFT = Budget(steps=600, batch=32, lr=2e-3, warmup=30)
CP_MIX = {"B": 0.85, "switch": 0.15}
RELIABILITY_THRESHOLD = 0.9
MAX_EXTRA_ROUNDS = 2
N_CHECK = 200           # held-out A items for the reliability check
MODELS = ("base", "cp", "skilled", "nonskill", "upper")
STORIES = {   # each model's card
    "base": "Pretrained from scratch on language A text (contexts, questions, verbose answers only).",
    "cp": "`base` continued-pretrained on 85% language B and 15% code-switched text.",
    "skilled": "`base` fine-tuned on the skill in language A (answer tokens only; embeddings and lm_head frozen).",
    "nonskill": "`base` fine-tuned with the skill's budget on another task (repeat the statement): the demo's "
                "control vector.",
    "upper": "`cp` fine-tuned on the skill in language B: what direct training in B reaches.",
}


def build_tokenizer(world: W.World):
    """Word-level tokenizer over the world's vocabulary, with a ChatML chat template."""
    from skillgraft.lab.tiny import build_tokenizer as _build

    return _build(world.vocabulary())


def _pairs(items) -> list[tuple[str, str]]:
    return [(it.prompt, it.answer) for it in items]


def skilled_heldout_accuracy(model, tokenizer, world: W.World, lang: str = "A", n: int = N_CHECK) -> float:
    """Exact match of `model` on `n` held-out skill items in `lang` (the reliability check)."""
    from skillgraft.lab.evaluate import run_items, score

    items = W.skill_items(world, lang, "heldout", n, seed=1)
    return score(run_items(model, tokenizer, items, name="check", scale=None, lang=lang), world)["accuracy"]


def apply_reliability_rule(base, make_skilled, check, extend_base, *, threshold: float = RELIABILITY_THRESHOLD,
                           max_rounds: int = MAX_EXTRA_ROUNDS, say=lambda msg: None):
    """The documented rule, the same for every seed: fine-tune, check held-out A, and while the
    check is below `threshold` (at most `max_rounds` times) train the base longer and redo it.

    Returns (final base, skilled, extra rounds used, the check value of every round).
    """
    rounds, checks = 0, []
    while True:
        skilled = make_skilled(base)
        checks.append(check(skilled))
        say(f"skilled held-out A exact match {checks[-1]:.3f} (round {rounds})")
        if checks[-1] >= threshold or rounds >= max_rounds:
            return base, skilled, rounds, checks
        rounds += 1
        base = extend_base(base, rounds)


def build(out_dir: Path, seed: int = 0, *, force: bool = False, quiet: bool = False,
          command: str | None = None) -> dict:
    """Build all lab models for `seed` into `out_dir` (published by rename); returns the record."""
    set_threads()
    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()   # save_pretrained's "Writing model shards" bars
    out_dir = Path(out_dir)
    check_output(out_dir, [], force=force, option="--out")
    with AtomicFolder(out_dir, force=force) as tmp:   # never leaves a half-built folder behind
        record = _build_into(tmp, seed, quiet=quiet, command=command)
    if not quiet:
        print(f"[lab] built {', '.join(MODELS)} in {record['seconds']} s -> {out_dir}", file=sys.stderr)
    return record


def _build_into(tmp: Path, seed: int, *, quiet: bool, command: str | None) -> dict:
    """Train and save every lab model into `tmp`; returns the build record."""
    import copy

    t0 = time.time()
    say = (lambda msg: None) if quiet else (lambda msg: print(f"[lab] {msg}", file=sys.stderr))

    world = W.make_world(seed)
    tok = build_tokenizer(world)
    sft_pairs_a = _pairs(W.skill_items(world, "A", "sft", 4000, seed=0))

    base = new_model(tok, seed)
    base = train_lm(base, tok, W.pretrain_docs(world, 20000, seed=0), BASE, seed, desc="base", quiet=quiet)

    def make_skilled(model):
        return train_sft(copy.deepcopy(model), tok, sft_pairs_a, SFT, seed, desc="skilled", quiet=quiet)

    def extend_base(model, round_no):
        docs = W.pretrain_docs(world, 10000, seed=round_no)
        return train_lm(model, tok, docs, EXTRA_BASE, seed + 1000 * round_no, desc=f"base+{round_no}", quiet=quiet)

    base, skilled, rounds, checks = apply_reliability_rule(
        base, make_skilled, lambda m: skilled_heldout_accuracy(m, tok, world), extend_base, say=say)

    cp = train_lm(copy.deepcopy(base), tok, W.pretrain_docs(world, 12000, seed=100, mix=CP_MIX), CP, seed,
                  desc="cp", quiet=quiet)
    nonskill = train_sft(copy.deepcopy(base), tok, _pairs(W.echo_items(world, 4000, seed=0)), SFT, seed,
                         desc="nonskill", quiet=quiet)
    upper = train_sft(copy.deepcopy(cp), tok, _pairs(W.skill_items(world, "B", "sft", 4000, seed=0)), SFT,
                      seed, desc="upper", quiet=quiet)

    record = {
        "command": command or f"skillgraft lab build --seed {seed}",
        "seed": seed,
        "shape": MODEL_SHAPE,
        "budgets": {k: v.__dict__ for k, v in
                    {"base": BASE, "extra_base": EXTRA_BASE, "cp": CP, "sft": SFT}.items()},
        "cp_mix": CP_MIX,
        "reliability": {"threshold": RELIABILITY_THRESHOLD, "extra_rounds": rounds,
                        "heldout_A_exact_match": checks, "passed": checks[-1] >= RELIABILITY_THRESHOLD},
    }
    options = {k: record[k] for k in ("seed", "shape", "budgets", "cp_mix")}
    for name, model in (("base", base), ("cp", cp), ("skilled", skilled), ("nonskill", nonskill),
                        ("upper", upper)):
        folder = save_model(model, tok, tmp / name)
        write_manifest(folder, kind="model", inputs=[], options=options,
                       extra={"lab_model": name, "reliability": record["reliability"]},
                       card=Card(title=f"lab {name} (seed {seed})", summary=STORIES[name], tags=["lab"]))
    record["seconds"] = round(time.time() - t0, 1)
    (tmp / "lab.json").write_text(json.dumps(record, indent=2) + "\n")
    write_manifest(tmp, kind="lab-build", inputs=[], options=options,
                   extra={"models": list(MODELS), "reliability": record["reliability"]})
    return record
