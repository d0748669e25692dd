"""The knowledge world: invented people, four one-word attributes, biographies and questions.

Why this world (Physics of Language Models 3.1, and the prototype of issue 7): to tell
*stored* from *extractable* knowledge, every fact must be a single token the model can only
know from training, asked in a fixed question format. People have three-word names drawn
from shared pools (so no single word identifies a person), and four attributes (birth
city, birth year, university, company). Each attribute has 8 sentence templates; a
person's biography picks one template per attribute and an order of the four sentences.
The pretraining condition `k` gives each person `k` biographies with different templates
and different sentence orders ("phrasings"); `fullname` repeats the full name in every
sentence instead of a pronoun. Everything is a pure function of
the seed (`random.Random`), so the same seed gives the same texts on every machine.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

ATTRIBUTES = ("city", "year", "university", "company")

FIRST = ("kalo miru teso pavi rune dosa lemi tark vani sulo bero jati nomi "
         "fela garo hiku zeno wima qado yoli").split()
MIDDLE = ("ander bolin carim delos ferun galio hemar islen jorov kemal lunas "
          "morin nadel oskar pelin quira rosel tavin ulmar veron").split()
LAST = ("ashby brennt colver dunmoor eskill farrow grendt holloway iverly jessop "
        "kettering lowther marrick norcott ormsby pellow quennell rastrick stanwix tulliver").split()
VALUES = {
    "city": ("paris tokyo lima oslo cairo quito dakar hanoi perth porto riga sofia "
             "tunis accra baku doha kiev minsk rome bern").split(),
    "year": tuple(str(y) for y in range(1940, 2000)),
    "university": ("harvard oxford yale cambridge stanford princeton caltech mit "
                   "eth sorbonne bologna leiden uppsala heidelberg kyoto tsinghua").split(),
    "company": ("acme globex initech umbrella hooli vandelay wonka stark wayne cyberdyne "
                "soylent tyrell massive duff oscorp aperture").split(),
}

# Eight templates per attribute, all subject-first so a pronoun can replace the name.
TEMPLATES = {
    "city": ("{s} was born in {v} .", "{s} came into the world in {v} .", "{s} began life in {v} .",
             "{s} entered the world in {v} .", "{s} spent the early years in {v} .",
             "{s} was brought up in {v} .", "{s} is a native of {v} .", "{s} first saw daylight in {v} ."),
    "year": ("{s} was born in the year {v} .", "{s} has a birthday dating to {v} .",
             "{s} arrived on this earth in {v} .", "{s} celebrated a first birthday one year after {v} .",
             "{s} came to life in {v} .", "{s} was welcomed into the family in {v} .",
             "{s} entered life in the year {v} .", "{s} was born during {v} ."),
    "university": ("{s} studied at {v} .", "{s} graduated from {v} .", "{s} attended {v} .",
                   "{s} earned a degree at {v} .", "{s} received an education at {v} .",
                   "{s} completed studies at {v} .", "{s} was a student at {v} .",
                   "{s} took classes at {v} ."),
    "company": ("{s} works for {v} .", "{s} is employed by {v} .", "{s} has a job at {v} .",
                "{s} earns a living at {v} .", "{s} is on the staff of {v} .",
                "{s} joined the team at {v} .", "{s} holds a position at {v} .",
                "{s} is paid by {v} ."),
}
# The extraction questions (stage 2 and test). Injected Q&A texts use *other* wordings.
QUESTIONS = {"city": "Q: where was {n} born ? A:", "year": "Q: when was {n} born ? A:",
             "university": "Q: where did {n} study ? A:", "company": "Q: where does {n} work ? A:"}
# Paraphrased questions for the injected "qa"/"interview"/"textbook" styles (never the test wording).
AUG_QUESTIONS = {"city": "in which city was {n} born ?", "year": "in which year was {n} born ?",
                 "university": "which university did {n} attend ?", "company": "which company employs {n} ?"}

N_PEOPLE = 200     # pretrained people; the first half get stage-2 QA training, the rest are held out
N_INJECT = 50      # new people for the injection study (never in stage 1)


@dataclass(frozen=True)
class Person:
    """One invented person: name, pronoun, and one value per attribute (in ATTRIBUTES order)."""

    name: str
    pronoun: str
    facts: tuple[tuple[str, str], ...]

    def fact(self, attribute: str) -> str:
        return dict(self.facts)[attribute]


@dataclass(frozen=True)
class KnowledgeWorld:
    """The people of one seed: `qa` (stage-2 training), `test` (held out), `inject` (new)."""

    seed: int
    people: tuple[Person, ...]
    injected: tuple[Person, ...]

    @property
    def qa_people(self) -> tuple[Person, ...]:
        return self.people[: len(self.people) // 2]

    @property
    def test_people(self) -> tuple[Person, ...]:
        return self.people[len(self.people) // 2:]


def make_world(seed: int = 0, n_people: int = N_PEOPLE, n_inject: int = N_INJECT) -> KnowledgeWorld:
    """Draw `n_people + n_inject` distinct people for `seed`."""
    rng = random.Random(f"knowledge-world-{seed}")
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n_people + n_inject:
        name = f"{rng.choice(FIRST)} {rng.choice(MIDDLE)} {rng.choice(LAST)}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    people = [Person(n, rng.choice(("he", "she")), tuple((a, rng.choice(VALUES[a])) for a in ATTRIBUTES))
              for n in names]
    return KnowledgeWorld(seed, tuple(people[:n_people]), tuple(people[n_people:]))


@dataclass(frozen=True)
class Phrasing:
    """One way to write a biography: a template index per attribute, and the sentence order."""

    templates: dict[str, int]
    order: tuple[str, ...] = ATTRIBUTES


def phrasings(person: Person, k: int, seed: int) -> list[Phrasing]:
    """The `k` phrasings of `person`'s biographies: k different templates per attribute and
    k different sentence orders.

    Why the order varies too (Physics of LM 3.1, "multiplicity" + "permute"): with one fixed
    order a fact can be stored keyed on the sentence before it (name -> city -> year -> ...),
    which completes the biography but cannot answer a question about the name alone. With
    varied orders, the only context every copy of a fact shares is the person.
    """
    rng = random.Random(f"phrasings-{seed}-{person.name}")
    picks = {a: rng.sample(range(len(TEMPLATES[a])), k) for a in ATTRIBUTES}
    orders = rng.sample(list(itertools.permutations(ATTRIBUTES)), k)
    return [Phrasing({a: picks[a][i] for a in ATTRIBUTES}, orders[i]) for i in range(k)]


def sentences(person: Person, phrasing: Phrasing, fullname: bool) -> list[tuple[str, str, str, str]]:
    """`(attribute, prefix, value, suffix)` per sentence of one biography, in the phrasing's
    order; the first sentence names the person, later ones the name again (`fullname`) or
    the pronoun."""
    out = []
    for i, attribute in enumerate(phrasing.order):
        subject = person.name if (i == 0 or fullname) else person.pronoun
        text = TEMPLATES[attribute][phrasing.templates[attribute]].format(s=subject, v="\0")
        prefix, suffix = text.split("\0")
        out.append((attribute, prefix.strip(), person.fact(attribute), suffix.strip()))
    return out


def biography(person: Person, phrasing: Phrasing, fullname: bool) -> str:
    return " ".join(f"{p} {v} {s}" for _, p, v, s in sentences(person, phrasing, fullname))


def biographies(person: Person, k: int, fullname: bool, seed: int) -> list[str]:
    """The `k` pretraining biographies of `person` (k different phrasings)."""
    return [biography(person, ph, fullname) for ph in phrasings(person, k, seed)]


def completion_items(person: Person, k: int, fullname: bool, seed: int) -> list[dict]:
    """Memorisation probes: the first biography cut before each attribute value.

    Prompt = every word of the biography before the value; the answer is the value word.
    """
    items, before = [], []
    for attribute, prefix, value, suffix in sentences(person, phrasings(person, k, seed)[0], fullname):
        items.append({"person": person.name, "attribute": attribute,
                      "prompt": " ".join([*before, prefix]), "answer": value})
        before += [prefix, value, suffix]
    return items


def qa_items(person: Person) -> list[dict]:
    """Extraction probes / stage-2 pairs: `Q: where was NAME born ? A:` → value."""
    return [{"person": person.name, "attribute": a, "prompt": QUESTIONS[a].format(n=person.name),
             "answer": person.fact(a)} for a in ATTRIBUTES]


def unrelated_texts(n: int, seed: int) -> list[str]:
    """`n` texts with the world's vocabulary but no facts about people (for the mix-in study)."""
    rng = random.Random(f"unrelated-{seed}")
    shapes = ("{c} is a city near {c2} .", "{u} is older than {u2} .", "{o} has an office in {c} .",
              "{o} hired people from {u} in {y} .", "the year {y} came before {y2} .",
              "{c} and {c2} are linked by a road .")
    out = []
    for _ in range(n):
        parts = [rng.choice(shapes).format(c=rng.choice(VALUES["city"]), c2=rng.choice(VALUES["city"]),
                                           u=rng.choice(VALUES["university"]), u2=rng.choice(VALUES["university"]),
                                           o=rng.choice(VALUES["company"]), y=rng.choice(VALUES["year"]),
                                           y2=rng.choice(VALUES["year"])) for _ in range(4)]
        out.append(" ".join(parts))
    return out


def vocabulary() -> list[str]:
    """Every word any text of the world can contain, in a fixed order (the tokenizer's vocabulary)."""
    words: list[str] = []
    for group in (FIRST, MIDDLE, LAST, *VALUES.values()):
        words += list(group)
    words += ["he", "she"]
    for texts in (*TEMPLATES.values(), QUESTIONS.values(), AUG_QUESTIONS.values()):
        for t in texts:
            words += [w for w in t.split() if not w.startswith("{")]
    words += "is a city near older than has an office in hired people from the year came before and are linked by road".split()
    words += STYLE_WORDS
    return list(dict.fromkeys(words))


# Words the augmentation styles of `skillgraft.data.augment.template_rewrite` add.
STYLE_WORDS = "Q: A: In brief: An interview about Interviewer: Expert: Lesson: Review questions: Answer: 1. 2. 3. 4.".split()
