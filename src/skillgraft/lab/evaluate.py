"""Greedy generation on skill items (through `skillgraft.evaluate`) and the three lab
metrics, kept apart so tests can recompute every reported number from saved generations.

Metrics (per model, per language):
- `accuracy`: exact match — the output is the gold name followed by `</s>`. Format is
  scored only together with a correct answer: a right name inside a verbose sentence, or a
  right name that does not stop, scores 0.
- `format_rate`: the output has the skill's shape (one name of the item's language, then
  `</s>`), right or wrong — shows how much of the *behaviour* moved.
- `language_leak`: the output contains a name of the other language.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from skillgraft.lab.world import Item, World

MAX_NEW_TOKENS = 6
EOS = "</s>"


@dataclass(frozen=True)
class Generation:
    """One scored output: which model/scale, the item, and the generated words (with `</s>` if it stopped)."""

    model: str
    scale: float | None
    lang: str
    prompt: str
    answer: str
    output: str

    def to_dict(self) -> dict:
        return asdict(self)


def generate(model, tokenizer, prompts: Sequence[str], *, batch: int = 256) -> list[str]:
    """Greedy continuations of `prompts` through the evaluation layer's transformers backend,
    as words, with `</s>` appended when the model emitted it (the skill is "answer, then stop")."""
    from skillgraft.evaluate.backends.base import GenerationSettings
    from skillgraft.evaluate.backends.hf import HFBackend

    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS)
    ended = HFBackend(model, tokenizer, label="lab").generate_ended(list(prompts), settings, batch_size=batch)
    return [f"{text} {EOS}".strip() if stopped else text for text, stopped in ended]


def run_items(model, tokenizer, items: Sequence[Item], *, name: str, scale: float | None,
              lang: str) -> list[Generation]:
    """Generate for every item and wrap the outputs as `Generation` records."""
    outs = generate(model, tokenizer, [it.prompt for it in items])
    return [Generation(name, scale, lang, it.prompt, it.answer, o) for it, o in zip(items, outs)]


def score(gens: Iterable[Generation | dict], world: World) -> dict:
    """`{"format_rate", "accuracy", "language_leak", "n"}` over `gens` (one model, one language)."""
    gens = [g if isinstance(g, Generation) else Generation(**g) for g in gens]
    n = len(gens)
    if n == 0:
        return {"format_rate": 0.0, "accuracy": 0.0, "language_leak": 0.0, "n": 0}
    names = {"A": set(world.names_a), "B": set(world.names_b)}
    fmt = acc = leak = 0
    for g in gens:
        words = g.output.split()
        other = names["B" if g.lang == "A" else "A"]
        acc += words == [g.answer, EOS]
        fmt += len(words) == 2 and words[1] == EOS and words[0] in names[g.lang]
        leak += any(w in other for w in words)
    return {"format_rate": round(fmt / n, 4), "accuracy": round(acc / n, 4),
            "language_leak": round(leak / n, 4), "n": n}


def score_table(gens: Iterable[Generation | dict], world: World) -> list[dict]:
    """One row per (model, scale) in first-seen order: `{"model", "scale", ...metrics}`."""
    groups: dict[tuple, list] = {}
    for g in gens:
        g = g if isinstance(g, Generation) else Generation(**g)
        groups.setdefault((g.model, g.scale), []).append(g)
    return [{"model": m, "scale": s, **score(gs, world)} for (m, s), gs in groups.items()]
