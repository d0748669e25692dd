"""Memorisation and extraction, computed from saved generations so tests can recompute them.

- memorisation: the model completes a biography sentence (prompt = the biography up to the
  value) with the right value as its first generated word;
- extraction: the model answers the test question (`Q: where was NAME born ? A:`) with the
  right value as its first generated word. Stopping (`</s>`) is not required: the point is
  whether the fact can be *retrieved*, and stage 2 teaches the format on other people.
"""

from __future__ import annotations

from typing import Iterable, Sequence


def first_word(output: str) -> str:
    words = output.split()
    return words[0] if words else ""


def correct(gen: dict) -> bool:
    return first_word(gen["output"]) == gen["answer"]


def rate(gens: Sequence[dict]) -> float:
    """Fraction of generations whose first word is the gold value (0.0 for none)."""
    return round(sum(correct(g) for g in gens) / len(gens), 4) if gens else 0.0


def generate(model, tokenizer, items: Sequence[dict], **tags) -> list[dict]:
    """Greedy outputs for `items` (`prompt`, `answer`, ...), each returned with `tags` added."""
    from skillgraft.lab.evaluate import generate as lab_generate

    outs = lab_generate(model, tokenizer, [it["prompt"] for it in items])
    return [{**tags, **it, "output": o} for it, o in zip(items, outs)]


def cell_scores(gens: Iterable[dict]) -> dict[tuple[str, int], dict]:
    """Per (cell, seed): the rate of every probe kind present, and `n` (extraction probes)."""
    by_cell: dict[tuple[str, int], dict[str, list]] = {}
    for g in gens:
        by_cell.setdefault((g["cell"], g["seed"]), {}).setdefault(g["probe"], []).append(g)
    return {key: {**{probe: rate(v) for probe, v in probes.items()}, "n": len(probes.get("extraction", []))}
            for key, probes in by_cell.items()}
