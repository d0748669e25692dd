"""`skillgraft sweep real-kit -o KIT`: the real-model studies (docs/real-model.md) written as
training configs, data and suites, so the shipped real-model sweeps (`recipes/sweeps/real-*.yaml`)
search them with `skillgraft train` / `skillgraft graft` as a user would on their own files.

    KIT/data/k5.jsonl          `lab real`'s 20 invented facts, k=5 texts each (the original and four
                               `data augment` styles, fixed framing: as the documented runs train)
    KIT/data/k5-qa.jsonl       the same plus each fact's QA pairs (the sweep's "QA mixing" choice)
    KIT/data/persona.jsonl     the 150 persona chats
    KIT/data/cp.jsonl          the continued-pretraining text (the island's facts and 40 unrelated texts)
    KIT/data/unseen-k5.jsonl   12 more invented facts, k=5 texts each, that no search looks at
                               (unseen-k5-qa.jsonl: with their QA pairs, as k5-qa.jsonl)
    KIT/suites/                knowledge (tune / heldout / memorization), persona (tune / heldout
                               halves of the 30 prompts), cp, unseen (the 36 probes of those 12 facts)
    KIT/knowledge.yaml         the hand-set recipes of the keep study (docs/real-model.md): k5 LoRA,
    KIT/persona.yaml           the persona LoRA (seed 002's q,v r16), CP full fine-tuning
    KIT/cp.yaml
    KIT/knowledge-full.yaml    the knowledge sweep's held-out winner (full fine-tuning, KL, replay, QA
                               pairs; docs/sweeps.md), its learned delta kept whole (merge scale 1)
    with --models:
    KIT/models/cp, persona,    cp.yaml and persona.yaml trained (the graft sweep's target and vector),
      persona-replay           and the persona with replay (a vector that keeps more of CP's answers)
    KIT/models/knowledge-full  knowledge-full.yaml trained (the knowledge graft sweep's vector)
    KIT/graft.yaml             the hand-set graft: CP + (persona − instruct) at scale 1
    KIT/knowledge-graft.yaml   the instruct model + (knowledge-full − instruct) at scale 1

Every path in the recipes is relative to KIT and the model is `lab:smollm2` (the converted
SmolLM2-135M-Instruct in the cache: `skillgraft lab fetch`). The probes' held-out halves are
never an objective of the shipped sweeps; they, `retention_check` and other seeds' kits are
what a found recipe is checked on.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

from skillgraft.checkpoint.manifest import write_manifest
from skillgraft.checkpoint.publish import AtomicFolder, check_output
from skillgraft.lab.real.model import NAME as MODEL   # `lab:smollm2`: the converted model in the cache

# The hand-set recipes (the keep study's budgets, docs/real-model.md): one declaration, read by
# benchmarks/keep_study.py too.
# `auto` + answer_only reads text records exactly as `text` does and QA records (k5-qa.jsonl) as
# questions with learned answers, so the sweep can choose either file.
KNOWLEDGE = {"method": "lora", "dtype": "float32", "lr": 1e-3, "max_steps": 75, "batch_size": 8,
             "data": {"format": "auto", "answer_only": True, "max_length": 512},
             "lora": {"r": 32, "alpha": 64, "targets": "knowledge", "tied_lm_head": "untie"}}
PERSONA = {"method": "lora", "dtype": "float32", "lr": 1e-3, "max_steps": 38, "batch_size": 8,
           "data": {"format": "chat", "answer_only": True, "max_length": 512},
           "lora": {"r": 16, "alpha": 32, "targets": "attn-qv"}}
CP = {"method": "full", "dtype": "float32", "lr": 1e-4, "max_steps": 35, "batch_size": 8,
      "data": {"format": "text", "max_length": 512}}
CP_UNRELATED = 40
PERSONA_REPLAY = {"replay": 60, "max_steps": 53}   # the keep study's persona-replay run
# The knowledge sweep's first held-out winner (studies/real-knowledge trial 2, docs/sweeps.md),
# trained whole: the knowledge graft sweep searches the scales its delta is applied at.
KNOWLEDGE_FULL = {"method": "full", "dtype": "float32", "mixed_precision": "auto", "lr": 2.1e-4, "max_steps": 111,
                  "batch_size": 8, "regularize": {"kl": {"weight": 0.15}},
                  "data": {"format": "auto", "answer_only": True, "max_length": 512, "group_by_length": True,
                           "replay": {"n": 40}}}


def training_config(budget: dict, train: str, seed: int, *, merge: bool, model: str = MODEL) -> dict:
    """A `skillgraft train` config from a budget: the data file, no monitor, no checkpoints."""
    return {"kind": "train", **budget, "model": model, "seed": seed, "merge": merge, "progress": False,
            "save_steps": 1_000_000, "monitor": {"enabled": False}, "output_dir": "out",
            "data": {**budget["data"], "train": train}}


def write_data(folder: Path, seed: int) -> None:
    from skillgraft.data.augment import augment
    from skillgraft.lab.real import corpus

    folder.mkdir(parents=True, exist_ok=True)
    facts = corpus.DATA / "facts.jsonl"
    corpus.write_jsonl(folder / "k5.jsonl", augment(facts, list(corpus.STYLES), framing="fixed"))
    corpus.write_jsonl(folder / "k5-qa.jsonl", augment(facts, [*corpus.STYLES, "qa-pairs"], framing="fixed"))
    corpus.write_jsonl(folder / "persona.jsonl", corpus.persona_records())
    corpus.write_jsonl(folder / "cp.jsonl", corpus.cp_texts(CP_UNRELATED, 1000 + seed))
    unseen = corpus.DATA / "unseen_facts.jsonl"   # the same files for the unseen facts (held-out checks)
    corpus.write_jsonl(folder / "unseen-k5.jsonl", augment(unseen, list(corpus.STYLES), framing="fixed"))
    corpus.write_jsonl(folder / "unseen-k5-qa.jsonl", augment(unseen, [*corpus.STYLES, "qa-pairs"], framing="fixed"))


def write_kit(out: Path, seed: int, *, model: str = MODEL, max_length: int | None = None, models: bool = False,
              force: bool = False, quiet: bool = False) -> Path:
    """Write the kit folder (published by rename); with `models`, train CP, the persona, the
    persona with replay and the knowledge winner (about 2, 5, 7 and 13 minutes on one core for
    SmolLM2) for the graft sweeps. `model`: another chat
    model to study instead (`max_length` to fit its context; longer texts are then truncated)."""
    from skillgraft.checkpoint.resolve import resolve_model
    from skillgraft.lab.real import corpus

    out = Path(out)
    check_output(out, [], force=force)
    base = resolve_model(model).path     # fails at once (for lab:smollm2, saying how to fetch it)
    with AtomicFolder(out, force=force) as temp:
        write_data(temp / "data", seed)
        corpus.write_suites(temp / "suites", persona_halves=True)
        recipes = {name: training_config(budget, train, seed, merge=name != "cp", model=model)
                   for name, budget, train in (("knowledge", KNOWLEDGE, "data/k5.jsonl"),
                                               ("persona", PERSONA, "data/persona.jsonl"), ("cp", CP, "data/cp.jsonl"),
                                               ("knowledge-full", KNOWLEDGE_FULL, "data/k5-qa.jsonl"))}
        if max_length is not None:
            for recipe in recipes.values():
                recipe["data"].update(max_length=max_length, overlong="truncate")
        for name, recipe in recipes.items():
            (temp / f"{name}.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        if models:
            _train_models(temp, recipes, quiet)
            graft = {"kind": "graft", "target": "models/cp/model",
                     "vectors": [{"base": model, "skilled": "models/persona/merged", "scale": 1.0}], "output": "out"}
            (temp / "graft.yaml").write_text(yaml.safe_dump(graft, sort_keys=False))
            knowledge = {"kind": "graft", "target": model, "with_embeddings": True,
                         "vectors": [{"base": model, "skilled": "models/knowledge-full/model", "scale": 1.0}],
                         "output": "out"}
            (temp / "knowledge-graft.yaml").write_text(yaml.safe_dump(knowledge, sort_keys=False))
        write_manifest(temp, kind="kit", inputs=[], options={"seed": seed, "models": models, "model": model,
                                                              "model_folder": str(base), "world": "lab real"})
    return out


def _train_models(kit: Path, recipes: dict, quiet: bool) -> None:
    """CP, the persona, and the persona trained with replay (the keep study's persona-replay:
    60 of the model's own general answers mixed in, the steps that keep the persona data's
    two epochs), whose vector keeps more of CP's answers when grafted (docs/real-model.md);
    and the knowledge sweep's winner, whose delta the knowledge graft sweep scales."""
    from skillgraft.train.config import TrainConfig
    from skillgraft.train.run import train

    runs = {"cp": recipes["cp"], "persona": recipes["persona"],
            "persona-replay": {**recipes["persona"], "max_steps": PERSONA_REPLAY["max_steps"],
                               "data": {**recipes["persona"]["data"], "replay": {"n": PERSONA_REPLAY["replay"]}}},
            "knowledge-full": recipes["knowledge-full"]}
    for name, recipe in runs.items():
        if not quiet:
            print(f"[real-kit] training {name} ({recipe['max_steps']} steps)", file=sys.stderr, flush=True)
        tree = {**recipe, "output_dir": str(kit / "models" / name),
                "data": {**recipe["data"], "train": str(kit / recipe["data"]["train"])}}
        train(TrainConfig.model_validate(tree))
        shutil.rmtree(kit / "models" / name / "checkpoints", ignore_errors=True)   # Trainer's working state
