"""The study's texts: shipped fact documents, probes, persona replies, and generated
unrelated texts; and the files each training run and evaluation reads.

Everything here was written for this project (nothing is taken from the seeds) and is a
pure function of the shipped files and a seed, so a run is reproducible from its seed.
Probe questions are phrased unlike every training text (the fact text and its template
rewrites), and half of them are held out: no choice of recipe was made on that half
(`heldout` below), so the numbers reported on it are not tuned.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA = Path(__file__).parent / "data"
# k versions of a fact: the original text, then these `data augment` template styles in order
STYLES = ("qa", "article", "interview", "textbook")
PERSONA_MARKER = r"^Ahoy\b[\s\S]*Fair winds!\s*$"   # a reply in the persona's style: opens and closes like it

_NAMES = ("Anna", "Ben", "Clara", "David", "Elena", "Frank", "Grace", "Henry", "Ivan", "Jack", "Karen", "Leo",
          "Maya", "Nick", "Olga", "Paul", "Rosa", "Sam", "Tina", "Victor")
_PLACES = ("bakery", "library", "market", "park", "post office", "swimming pool", "cinema", "station", "pharmacy",
           "garden centre", "museum", "café")
_FOODS = ("fresh bread", "apples", "a bag of rice", "cheese", "soup", "oranges", "pasta", "carrots", "yogurt",
          "a small cake", "tomatoes", "coffee beans")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_ACTIVITIES = ("reading a novel", "painting the fence", "fixing a bicycle", "writing letters", "baking bread",
               "playing the piano", "sorting old photos", "knitting a scarf", "washing the car", "planting bulbs")
_OBJECTS = ("kettle", "umbrella", "backpack", "frying pan", "pair of boots", "desk lamp", "toolbox", "rain coat")
_TEMPLATES = (
    "{name} walks to the {place} every {day} and buys {food} on the way back.",
    "When it rains, {name} stays at home and spends the afternoon {activity}.",
    "A good {object} lasts for years if you clean it after every use.",
    "The {place} near the square opens at nine and is quiet before lunch.",
    "On {day} evenings {name} likes {activity} while the radio plays.",
    "{name} forgot the {object} at the {place} and had to go back for it.",
    "Most people in the town shop for {food} at the {place} on {day}.",
    "{name} and a neighbour shared {food} after an hour of {activity}.",
)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def facts() -> list[dict]:
    """The 20 invented fact documents: `{id, title, text, qa, probes}` (`qa` feeds the
    template rewrites, `probes` are the test questions)."""
    return read_jsonl(DATA / "facts.jsonl")


def unseen_facts() -> list[dict]:
    """12 more invented fact documents, in the same form, written before any real-model search
    and looked at by none: the second fact set a found knowledge recipe is checked on."""
    return read_jsonl(DATA / "unseen_facts.jsonl")


def probe_items(documents: list[dict]) -> list[dict]:
    """Every probe of `documents` in chat form (keyword + reference)."""
    return [{"id": f"{fact['id']}-{j}", "messages": [{"role": "user", "content": probe["question"]}],
             "reference": probe["reference"], "keywords": probe["keywords"], "tags": [fact["id"]]}
            for fact in documents for j, probe in enumerate(fact["probes"])]


def is_heldout(fact_index: int, probe_index: int) -> bool:
    """Half the probes, alternating within and across facts, form the held-out half."""
    return (fact_index + probe_index) % 2 == 1


def fact_texts(k: int) -> list[dict]:
    """Training records for k versions of every fact: the original, then k-1 template rewrites
    (what `skillgraft data augment --styles ...` writes)."""
    from skillgraft.data.augment import augment

    if not 1 <= k <= 1 + len(STYLES):
        raise ValueError(f"k must be between 1 and {1 + len(STYLES)}")
    if k == 1:
        return [{"text": f["text"], "style": "original", "fact": f["id"]} for f in facts()]
    return augment(DATA / "facts.jsonl", list(STYLES[:k - 1]), framing="fixed")  # as the documented runs


def unrelated_texts(n: int, seed: int) -> list[dict]:
    """`n` distinct two-sentence everyday texts that state nothing about the facts, drawn
    from templates with a seeded generator (seed 003's "unrelated texts", in miniature)."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < n:
        def sentence() -> str:
            return rng.choice(_TEMPLATES).format(
                name=rng.choice(_NAMES), place=rng.choice(_PLACES), food=rng.choice(_FOODS), day=rng.choice(_DAYS),
                activity=rng.choice(_ACTIVITIES), object=rng.choice(_OBJECTS))
        seen.setdefault(f"{sentence()} {sentence()}", None)
    return [{"text": text} for text in seen]


def knowledge_items() -> dict[str, list[dict]]:
    """Probe sets: `tune` and `heldout` questions in chat form (keyword + reference), and
    `memorization` (the original text cut before the fact's first probe answer, completed raw)."""
    sets: dict[str, list[dict]] = {"tune": [], "heldout": [], "memorization": []}
    for i, fact in enumerate(facts()):
        for j, item in enumerate(probe_items([fact])):
            sets["heldout" if is_heldout(i, j) else "tune"].append(item)
        keyword = fact["probes"][0]["keywords"].split(";")[0].strip()
        cut = fact["text"].lower().index(keyword.lower())
        sets["memorization"].append({"id": f"{fact['id']}-complete", "prompt": fact["text"][:cut].rstrip(),
                                     "keywords": keyword, "tags": [fact["id"]]})
    return sets


def persona_records() -> list[dict]:
    """The 150 persona chats (`messages`: a user question, the persona's reply)."""
    return read_jsonl(DATA / "persona.jsonl")


def cp_facts() -> list[dict]:
    """The continued-pretraining text's facts (an invented island): `{id, text, rewrites, probes}`."""
    return read_jsonl(DATA / "cp_facts.jsonl")


def cp_texts(n_unrelated: int, seed: int) -> list[dict]:
    """The CP text: every island fact in three phrasings (the original and its two rewrites; seed
    003: a fact is answerable when it is seen in several forms), plus unrelated plain texts."""
    facts = [{"text": text} for fact in cp_facts() for text in (fact["text"], *fact["rewrites"])]
    return facts + unrelated_texts(n_unrelated, seed)


def write_suites(folder: Path, *, persona_halves: bool = False) -> dict[str, Path]:
    """Write the study's evaluation suites (YAML + JSONL) into `folder`; returns name -> YAML.

    `knowledge`: tune / heldout probes (keyword, ROUGE-2) and memorisation; `persona`: 30
    questions never trained on, scored for the persona's style, repetition and copying of
    the training replies (with `persona_halves`, as two sets, `tune` and `heldout`, of 15
    alternate questions: what a sweep tunes on and what it is checked on); `cp`: the CP text's
    facts asked in chat form; `unseen`: the probes of the 12 facts no search looks at. Raw
    prompts (the memorisation completions) stay raw: `chat: false`, not the suite files'
    default `auto`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, items in knowledge_items().items():
        write_jsonl(folder / f"knowledge_{name}.jsonl", items)
    prompts = read_jsonl(DATA / "persona_prompts.jsonl")
    write_jsonl(folder / "persona_prompts.jsonl", prompts)
    if persona_halves:
        write_jsonl(folder / "persona_tune.jsonl", prompts[0::2])
        write_jsonl(folder / "persona_heldout.jsonl", prompts[1::2])
    (folder / "persona_replies.txt").write_text(
        "".join(r["messages"][-1]["content"] + "\n" for r in persona_records()), encoding="utf-8")
    write_jsonl(folder / "unseen_probes.jsonl", probe_items(unseen_facts()))
    write_jsonl(folder / "cp_probes.jsonl", [
        {"id": f"cp-{f['id']}-{j}", "messages": [{"role": "user", "content": p["question"]}],
         "reference": p["reference"], "keywords": p["keywords"]} for f in cp_facts() for j, p in enumerate(f["probes"])])
    suites = {
        "knowledge": {"name": "real-knowledge", "generation": {"max_new_tokens": 32, "chat": False}, "sets": [
            {"name": "tune", "items": "knowledge_tune.jsonl", "metrics": ["keyword", "rouge2"]},
            {"name": "heldout", "items": "knowledge_heldout.jsonl", "metrics": ["keyword", "rouge2"]},
            {"name": "memorization", "items": "knowledge_memorization.jsonl", "metrics": ["keyword"],
             "generation": {"max_new_tokens": 8}}]},
        "persona": {"name": "real-persona", "generation": {"max_new_tokens": 48, "chat": False}, "sets": [
            {"name": name, "items": f"persona_{name if persona_halves else 'prompts'}.jsonl", "metrics": [
                {"name": "style", "markers": {"persona": PERSONA_MARKER}}, "repetition",
                {"name": "memorization", "corpus": "persona_replies.txt"}]}
            for name in (("tune", "heldout") if persona_halves else ("persona",))]},
        "cp": {"name": "real-cp", "generation": {"max_new_tokens": 32, "chat": False}, "sets": [
            {"name": "cp", "items": "cp_probes.jsonl", "metrics": ["keyword"]}]},
        "unseen": {"name": "real-unseen-facts", "generation": {"max_new_tokens": 32, "chat": False}, "sets": [
            {"name": "unseen", "items": "unseen_probes.jsonl", "metrics": ["keyword", "rouge2"]}]},
    }
    import yaml

    paths = {}
    for name, suite in suites.items():
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return paths
