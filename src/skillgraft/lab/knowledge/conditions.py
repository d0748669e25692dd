"""The study's cells: what each trains and how it is probed.

Budgets are fixed per job and identical across the cells they compare ("equal exposure"):
stage 1 always sees `STAGE1.steps × STAGE1.batch` biographies whatever `k` is (with k=5
each biography is seen 5× less often), injection always sees the same number of injected
texts whatever the number of styles. Cells:

- pretrain (a): stage 1 on biographies with k phrasings (names in every sentence or
  pronouns), stage 2 QA on half the people (with as many stage-1 biographies replayed as
  there are QA pairs), probed on the other half;
- inject (b): the k=1/pronoun model from (a) (stage 1 kept single-phrasing, as the issue
  asks) learns `N_INJECT` new people from k styled texts each, with replay; probed on them;
  the same injection into the k=5/pronoun model shows what a multi-phrasing stage 1 changes;
- unrelated (c): injection at k=5 with N unrelated texts mixed in, each seen as often as an
  injected text (so more texts = more steps; exposure to the facts is unchanged);
- targets (d): injection at k=5 through a LoRA on a target preset of `skillgraft.train`
  vs full fine-tuning, at equal steps.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from skillgraft.data.augment import template_rewrite
from skillgraft.lab.knowledge import world as W
from skillgraft.lab.knowledge.metrics import generate
from skillgraft.lab.train import Budget

STAGE1 = Budget(steps=1500, batch=32, lr=3e-3, warmup=50)
STAGE2 = Budget(steps=600, batch=32, lr=5e-4, warmup=30)
INJECT = Budget(steps=200, batch=32, lr=1e-3, warmup=20)
LORA_LR = 5e-3
STYLES = ("biography", "qa", "interview", "article", "textbook")
TARGET_SETS = ("attn-qv", "knowledge", "all-linear")


@dataclass(frozen=True)
class StudyBudget:
    """Budgets of one study run (the full study and the fast variant share the defaults;
    tests pass shorter ones)."""

    stage1: Budget = STAGE1
    stage2: Budget = STAGE2
    inject: Budget = INJECT
    lora_lr: float = LORA_LR


def pretrain_docs(world: W.KnowledgeWorld, k: int, fullname: bool) -> list[str]:
    """Stage-1 corpus: k biographies for every person (the QA half and the held-out half)."""
    return [b for p in world.people for b in W.biographies(p, k, fullname, world.seed)]


def stage2_replay(world: W.KnowledgeWorld, k: int, fullname: bool, n: int) -> list[str]:
    """`n` stage-1 biographies replayed during stage 2 (the whole corpus cycled in a seeded
    shuffle), so QA training does not erase what stage 1 stored: without replay, memorisation
    of the k=5 biographies fell to 0.88 after QA (seed 0, before this was added)."""
    corpus = pretrain_docs(world, k, fullname)
    random.Random(f"replay-{world.seed}-{k}-{fullname}").shuffle(corpus)
    return [corpus[i % len(corpus)] for i in range(n)]


def qa_pairs(people) -> list[tuple[str, str]]:
    return [(it["prompt"], it["answer"]) for p in people for it in W.qa_items(p)]


def styled_texts(person: W.Person, k: int, seed: int) -> list[str]:
    """k texts about a new person: its biography, then Q&A, interview, article, textbook rewrites.

    The rewrites come from `skillgraft.data.augment.template_rewrite` (the template rewriter of
    `skillgraft data augment`), fed the biography as text and one paraphrased question per
    attribute (never the test wording) with a full sentence as answer.
    """
    if not 1 <= k <= len(STYLES):
        raise ValueError(f"k must be 1..{len(STYLES)}")
    bio = W.biography(person, W.phrasings(person, 1, seed)[0], fullname=False)
    plain = W.Phrasing({a: 0 for a in W.ATTRIBUTES})   # first template, attributes in order
    answers = [f"{p} {v} {s}" for _, p, v, s in W.sentences(person, plain, fullname=True)]
    fact = {"title": person.name, "text": bio,
            "qa": [{"question": W.AUG_QUESTIONS[a].format(n=person.name), "answer": ans}
                   for a, ans in zip(W.ATTRIBUTES, answers)]}
    texts = [bio]
    for style in STYLES[1:k]:
        text = template_rewrite(fact, style, framing="fixed")  # the frames the published numbers used
        texts.append(text.replace(f"{person.name}.", f"{person.name} ."))   # keep the last name a word
    return texts


def injection_docs(world: W.KnowledgeWorld, k: int, n_unrelated: int, budget: Budget,
                   seed: int, base: tuple[int, bool] = (1, False)) -> tuple[list[str], int]:
    """The injection corpus and its step count.

    Half of the base budget is injected texts (cycled, so total exposure does not depend on k),
    half is replay (the base model's stage-1 biographies — `base` is its (k, fullname) — and
    stage-2 QA pairs, so the QA skill and old facts survive). Unrelated texts are added on
    top, each repeated as often as an injected text.
    """
    rng = random.Random(f"inject-{seed}-{k}-{n_unrelated}")
    injected = [t for p in world.injected for t in styled_texts(p, k, world.seed)]
    half = budget.steps * budget.batch // 2
    docs = [injected[i % len(injected)] for i in range(half)]
    replay_pool = pretrain_docs(world, *base) + [f"{q} {a}" for q, a in qa_pairs(world.qa_people)]
    docs += [rng.choice(replay_pool) for _ in range(half)]
    repeats = max(1, round(half / len(injected)))
    docs += [t for t in W.unrelated_texts(n_unrelated, seed) for _ in range(repeats)]
    rng.shuffle(docs)
    return docs, math.ceil(len(docs) / budget.batch)


def probe(model, tokenizer, people, *, k: int, fullname: bool, seed: int, tags: dict,
          extraction: bool = True) -> list[dict]:
    """Memorisation (biography completion) and, unless `extraction=False`, extraction (test
    question) generations for `people`."""
    mem = [it for p in people for it in W.completion_items(p, k, fullname, seed)]
    gens = generate(model, tokenizer, mem, probe="memorization", **tags)
    if extraction:
        ext = [it for p in people for it in W.qa_items(p)]
        gens += generate(model, tokenizer, ext, probe="extraction", **tags)
    return gens
