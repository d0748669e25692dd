"""Memorisation: does an output copy the training corpus? (seed 002's tweet-copying persona).

Longest common substring via `difflib.SequenceMatcher` and the share of the output's
n-grams found anywhere in the corpus.
"""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import Sequence

from skillgraft.evaluate.text import ngrams, units


def longest_common_substring(text: str, corpus: Sequence[str]) -> str:
    """The longest span of `text` found verbatim in any corpus document."""
    best = ""
    for doc in corpus:
        matcher = SequenceMatcher(None, text, doc, autojunk=False)
        match = matcher.find_longest_match(0, len(text), 0, len(doc))
        if match.size > len(best):
            best = text[match.a : match.a + match.size]
    return best


def corpus_ngrams(corpus: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """All n-grams of the corpus documents, for repeated overlap queries."""
    grams: set[tuple[str, ...]] = set()
    for doc in corpus:
        grams.update(ngrams(units(doc), n))
    return grams


def ngram_overlap(text: str, corpus_grams: set[tuple[str, ...]], n: int) -> float:
    """Share of the output's n-grams present in the corpus (0 when it has none)."""
    grams = ngrams(units(text), n)
    return sum(g in corpus_grams for g in grams) / len(grams) if grams else 0.0


def memorization_scores(text: str, corpus: Sequence[str], n: int = 4,
                        corpus_grams: set[tuple[str, ...]] | None = None) -> dict[str, float]:
    """`copied`: LCS length / output length; `lcs_chars`; `ngram_overlap` on n-grams of units."""
    stripped = text.strip()
    lcs = longest_common_substring(stripped, corpus)
    grams = corpus_grams if corpus_grams is not None else corpus_ngrams(corpus, n)
    return {
        "copied": len(lcs) / len(stripped) if stripped else 0.0,
        "lcs_chars": float(len(lcs)),
        "ngram_overlap": ngram_overlap(stripped, grams, n),
    }
