"""The lab's synthetic two-language world: who-did-what statements and questions about them.

Why this world: the demo must show a *skill* moving between languages by weight arithmetic,
so the skill has to generalise (it is measured on names never seen in fine-tuning) and the
two languages must share an alignment signal. Here they share every function word
(verbs, `what`, `who`, `Q:`, `A:`, punctuation) and differ only in their names: language A
names are syllable words like `kalo`, language B names are a seeded bijection onto other
invented words like `zuvek`. Sentences are subject-object-verb: `kalo miru likes .`

The skill: read a short context (one or two statements), answer `Q: kalo what likes ? A:`
with the single name `miru` and stop (`</s>`). Pretraining shows contexts and questions but
only *verbose* answers (the whole statement restated, `A: kalo miru likes .`), never the
answer-then-stop behaviour, so a base or CP model "knows" the answer but does not give it in
the skill's format. Everything is a pure function of the seed (`random.Random(seed)`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

VERBS = ("likes", "sees", "knows", "helps", "calls", "meets")
FUNCTION_WORDS = (*VERBS, "what", "who", "Q:", "A:", ".", "?", "then", "and", "repeat")
CHAT_ROLES = ("system", "user", "assistant")   # so the ChatML template tokenises without <unk>
_ONSETS_A = "k l m n p r s t"
_VOWELS_A = "a e i o u"
_ONSETS_B = "b d f g v z"
_CODAS_B = "k n x"

N_NAMES = 64          # names per language
N_SFT_NAMES = 40      # names the skill fine-tuning may use; the rest are held out


def _syllable_names(onsets: str, vowels: str, codas: str | None, rng: random.Random, n: int) -> list[str]:
    """`n` distinct invented words (two syllables, optional coda), in a seeded order."""
    onsets_l, vowels_l = onsets.split(), vowels.split()
    codas_l = codas.split() if codas else [""]
    pool = sorted({a + v + b + w + c for a in onsets_l for v in vowels_l for b in onsets_l for w in vowels_l
                   for c in codas_l})
    rng.shuffle(pool)
    return pool[:n]


@dataclass(frozen=True)
class World:
    """Names of both languages, the A→B bijection, and the fine-tuning/held-out name split."""

    seed: int
    names_a: tuple[str, ...]
    names_b: tuple[str, ...]
    sft_names_a: tuple[str, ...] = field(repr=False)
    heldout_names_a: tuple[str, ...] = field(repr=False)

    @property
    def to_b(self) -> dict[str, str]:
        return dict(zip(self.names_a, self.names_b))

    def vocabulary(self) -> list[str]:
        """Every word the world can produce, in a fixed order (the tokenizer's vocabulary)."""
        return [*FUNCTION_WORDS, *CHAT_ROLES, *self.names_a, *self.names_b]

    def translate(self, text: str) -> str:
        """Language A text → language B (names mapped, function words shared)."""
        mapping = self.to_b
        return " ".join(mapping.get(word, word) for word in text.split())

    def names(self, lang: str, split: str = "all") -> tuple[str, ...]:
        """Names of `lang` (A/B) from `split` (all, sft, heldout), B names aligned to A's."""
        base = {"all": self.names_a, "sft": self.sft_names_a, "heldout": self.heldout_names_a}[split]
        return base if lang == "A" else tuple(self.to_b[n] for n in base)


def make_world(seed: int = 0) -> World:
    """The world for `seed`: 64 names per language, a B bijection and a 40/24 name split."""
    rng = random.Random(f"world-{seed}")
    names_a = _syllable_names(_ONSETS_A, _VOWELS_A, None, rng, N_NAMES)
    names_b = _syllable_names(_ONSETS_B, "a e i o u", _CODAS_B, rng, N_NAMES)
    order = list(names_a)
    rng.shuffle(order)
    return World(seed=seed, names_a=tuple(names_a), names_b=tuple(names_b),
                 sft_names_a=tuple(sorted(order[:N_SFT_NAMES])),
                 heldout_names_a=tuple(sorted(order[N_SFT_NAMES:])))


@dataclass(frozen=True)
class Item:
    """One skill item: `prompt` (context + question, ending in `A:`) and the gold name."""

    prompt: str
    answer: str
    statement: str   # the statement the question is about (the verbose answer restates it)


def _episode(names: tuple[str, ...], rng: random.Random, max_statements: int = 1) -> Item:
    """A context of 1..`max_statements` statements (distinct names and verbs), a question on one."""
    k = rng.randint(1, max_statements)
    people = rng.sample(names, 2 * k)
    verbs = rng.sample(VERBS, k)
    statements = [f"{people[2 * i]} {people[2 * i + 1]} {verbs[i]} ." for i in range(k)]
    j = rng.randrange(k)
    subj, obj, verb = people[2 * j], people[2 * j + 1], verbs[j]
    if rng.random() < 0.5:
        question, answer = f"Q: {subj} what {verb} ?", obj
    else:
        question, answer = f"Q: who {obj} {verb} ?", subj
    return Item(prompt=" ".join(statements) + f" {question} A:", answer=answer, statement=statements[j])


def _code_switch(text: str, world: World, rng: random.Random) -> str:
    """Each name independently in A or B: the mixed-language text CP data partly consists of."""
    mapping = world.to_b
    return " ".join(mapping[w] if w in mapping and rng.random() < 0.5 else w for w in text.split())


def pretrain_docs(world: World, n: int, *, seed: int, mix: dict[str, float] | None = None) -> list[str]:
    """`n` pretraining documents: episodes with verbose answers, and plain statement runs.

    `mix` gives the share of each language form: `A`, `B` (translated), `switch` (names
    code-switched). Base pretraining is all A; CP is mostly B plus some code-switching.
    """
    mix = mix or {"A": 1.0}
    rng = random.Random(f"pretrain-{world.seed}-{seed}")
    forms, weights = zip(*mix.items())
    docs = []
    for _ in range(n):
        if rng.random() < 0.8:
            item = _episode(world.names_a, rng, max_statements=2)
            text = f"{item.prompt} {item.statement}"
        else:
            people = rng.sample(world.names_a, 6)
            text = " then ".join(f"{people[2 * i]} {people[2 * i + 1]} {rng.choice(VERBS)}" for i in range(3)) + " ."
        form = rng.choices(forms, weights)[0]
        if form == "B":
            text = world.translate(text)
        elif form == "switch":
            text = _code_switch(text, world, rng)
        docs.append(text)
    return docs


def skill_items(world: World, lang: str, split: str, n: int, *, seed: int) -> list[Item]:
    """`n` skill items in `lang` using only the names of `split` (sft or heldout).

    One statement per context: with a distractor statement, tiny bases of this size
    restate the wrong statement too often (about half the time) for the skill to be learnable.
    """
    rng = random.Random(f"skill-{world.seed}-{lang}-{split}-{seed}")
    names = world.names(lang, split)
    return [_episode(names, rng) for _ in range(n)]


def echo_items(world: World, n: int, *, seed: int) -> list[Item]:
    """The non-skill control task (language A): `Q: repeat ? A:` → the first statement, stop.

    Same format and training budget as the skill, but a different behaviour, so its vector
    is a fair "any fine-tuning vector" control.
    """
    rng = random.Random(f"echo-{world.seed}-{seed}")
    items = []
    for _ in range(n):
        item = _episode(world.names("A", "sft"), rng)
        context = item.prompt.split(" Q: ")[0]
        first = context.split(" . ")[0].rstrip(" .") + " ."
        items.append(Item(prompt=f"{context} Q: repeat ? A:", answer=first, statement=first))
    return items
