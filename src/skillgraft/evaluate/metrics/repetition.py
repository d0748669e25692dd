"""Degeneration measures: repeated n-grams, longest runs, distinct-n.

A learning rate too high turns a model into "oooo…" (seed 003) and a persona model into
`〜〜〜〜` (seed 002); these numbers catch both without reading the outputs.
"""

from __future__ import annotations

from skillgraft.evaluate.text import ngrams, units_with_symbols


def repeated_ngram_rate(tokens: list[str], n: int = 3) -> float:
    """Share of n-grams that repeat an earlier one: 1 - unique/total (0 when none)."""
    grams = ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(tokens: list[str], n: int) -> float:
    """Unique n-grams / total n-grams (0 when the text has fewer than n tokens)."""
    grams = ngrams(tokens, n)
    return len(set(grams)) / len(grams) if grams else 0.0


def longest_run(seq) -> int:
    """Length of the longest run of one repeated element (character or token)."""
    best = current = 0
    previous = object()
    for element in seq:
        current = current + 1 if element == previous else 1
        previous = element
        best = max(best, current)
    return best


def repetition_scores(text: str, n: int = 3) -> dict[str, float]:
    """All degeneration measures of one output, on script-aware units with symbols kept."""
    tokens = units_with_symbols(text)
    return {
        "rate": repeated_ngram_rate(tokens, n),
        "longest_char_run": float(longest_run(c for c in text if not c.isspace())),
        "longest_token_run": float(longest_run(tokens)),
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
    }
