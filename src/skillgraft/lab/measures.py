"""The lab's named measures for `skillgraft sweep` (registered through the `skillgraft.measures`
entry point, as the lab's suites are through `skillgraft.suites`): lab numbers that no suite
file can express, because they depend on which lab world (seed) the trial's models come from.

The world seed is read from the lab model the recipe started from (`options.seed` in its
`skillgraft.json`), so the same sweep config scores a held-out seed's build correctly when only
the recipe's models change.

- `lab_skill_b` / `lab_skill_a`: the lab demo's accuracy (exact match, one name then `</s>`)
  on `n` held-out items (default 200, the items `skillgraft lab demo` scores), so numbers
  compare with docs/lab.md (scale 1: 0.85 ± 0.12 over ten seeds).
- `lab_retention_a` / `lab_retention_b`: general-text retention as the training monitor
  measures it, perplexity of the graft target ÷ perplexity of the trial's model on `n`
  held-out pretraining texts of that language (1.0 = unchanged, < 1 = worse).
- `knowledge_extraction`: the knowledge lab's extraction of the injected people (first word
  of the answer to the test question); `knowledge_retention`: memorisation of the old
  held-out people (biography completion), as `skillgraft lab knowledge` reports them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from skillgraft.sweep.measures import load_model


def lab_option(model_ref: str, key: str):
    """What a lab model's skillgraft.json records under `options` (`seed`; a knowledge base's
    `cell`): lab build, the knowledge study and `sweep knowledge-kit` write them there."""
    from skillgraft.checkpoint.resolve import resolve_model
    from skillgraft.errors import UserError

    folder = Path(resolve_model(model_ref).path)
    try:
        return json.loads((folder / "skillgraft.json").read_text())["options"][key]
    except (OSError, KeyError, TypeError, ValueError):
        raise UserError(f"{model_ref}: not a lab model (its skillgraft.json records no `{key}`); lab measures "
                        "need a model from `skillgraft lab build` or `skillgraft sweep knowledge-kit`") from None


def lab_seed(model_ref: str) -> int:
    """The world seed of a lab model (`lab:cp`, a `lab build` folder, a knowledge base)."""
    return int(lab_option(model_ref, "seed"))


def _start(recipe) -> str:
    return recipe.target if recipe.kind == "graft" else recipe.model


def _skill(lang: str):
    def measure(model_dir, recipe, n: int = 200, items_seed: int = 0) -> float:
        from skillgraft.lab import world as W
        from skillgraft.lab.evaluate import run_items, score

        world = W.make_world(lab_seed(_start(recipe)))
        items = W.skill_items(world, lang, "heldout", n, seed=1000 + items_seed)
        model, tokenizer = load_model(model_dir)
        return score(run_items(model, tokenizer, items, name="trial", scale=None, lang=lang), world)["accuracy"]
    return measure


def _retention(lang: str):
    def measure(model_dir, recipe, n: int = 200) -> float:
        from skillgraft.checkpoint.resolve import resolve_model
        from skillgraft.lab import world as W
        from skillgraft.lab.train import lm_rows
        from skillgraft.train.monitor import mean_loss

        from skillgraft.evaluate.reference import model_fingerprint

        start = _start(recipe)
        world = W.make_world(lab_seed(start))
        docs = W.pretrain_docs(world, n, seed=7919, mix={lang: 1.0})  # a stream no build trains on

        def loss(model_ref) -> float:
            model, tokenizer = load_model(model_ref)
            return mean_loss(model, lm_rows(tokenizer, docs), tokenizer.pad_token_id)

        folder = resolve_model(start).path
        key = (model_fingerprint(folder), lang, n)
        if key not in _START_LOSS:   # the same for every trial of a sweep: loaded and measured once
            _START_LOSS[key] = loss(folder)
        return math.exp(_START_LOSS[key] - loss(model_dir))
    return measure


_START_LOSS: dict[tuple, float] = {}


def _base_phrasing(model_ref: str) -> tuple[int, bool]:
    """(k, fullname) of a knowledge base model, from its cell name (`pronoun-k5`)."""
    style, k = str(lab_option(model_ref, "cell")).split("-k")
    return int(k), style == "fullname"


def _knowledge(probe: str):
    def measure(model_dir, recipe) -> float:
        from skillgraft.lab.knowledge import conditions as C
        from skillgraft.lab.knowledge import world as W
        from skillgraft.lab.knowledge.metrics import rate

        seed = lab_seed(recipe.model)
        world = W.make_world(seed)
        k, fullname = _base_phrasing(recipe.model)
        model, tokenizer = load_model(model_dir)
        tags = {"cell": "trial", "seed": seed}
        if probe == "extraction":
            gens = C.probe(model, tokenizer, world.injected, k=1, fullname=False, seed=seed, tags=tags)
        else:  # the old held-out people, probed with the base's own biographies
            gens = C.probe(model, tokenizer, world.test_people, k=k, fullname=fullname, seed=seed, tags=tags,
                           extraction=False)
        return rate([g for g in gens if g["probe"] == probe])
    return measure


MEASURES = {
    "lab_skill_b": _skill("B"),
    "lab_skill_a": _skill("A"),
    "lab_retention_a": _retention("A"),
    "lab_retention_b": _retention("B"),
    "knowledge_extraction": _knowledge("extraction"),
    "knowledge_retention": _knowledge("memorization"),
}
