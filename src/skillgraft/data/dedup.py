"""Exact and near-duplicate removal for short training texts.

A persona corpus of tweets repeats itself (retweets, bot posts, the same greeting with
one emoji changed); duplicates weight those lines several times over and push the model
to copy them verbatim. Exact duplicates are found after whitespace/case folding; near
duplicates by Jaccard similarity of character 3-gram sets, which works for Japanese (no
word boundaries) as well as for English.
"""

from __future__ import annotations

import re


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _shingles(text: str, n: int = 3) -> frozenset[str]:
    folded = _fold(text)
    if len(folded) <= n:
        return frozenset([folded])
    return frozenset(folded[i:i + n] for i in range(len(folded) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    """Jaccard similarity of two sets (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def dedup(texts: list[str], near_threshold: float = 0.8) -> tuple[list[int], int, int]:
    """Indices of the texts to keep (first occurrence wins), and counts of exact/near drops.

    `near_threshold` is the 3-gram Jaccard similarity at or above which a text counts as a
    near duplicate of an earlier kept one; `>= 1` turns near-duplicate removal off. The
    pairwise check is quadratic with a size filter (Jaccard >= t needs size ratio >= t),
    which is fast for the few-thousand-line corpora this step is meant for.
    """
    keep: list[int] = []
    kept_shingles: list[frozenset] = []
    seen: set[str] = set()
    exact = near = 0
    for index, text in enumerate(texts):
        folded = _fold(text)
        if folded in seen:
            exact += 1
            continue
        seen.add(folded)
        if near_threshold < 1.0:
            grams = _shingles(text)
            size = len(grams)
            duplicate = False
            for other in kept_shingles:
                small, large = sorted((size, len(other)))
                if large and small / large < near_threshold:
                    continue
                if jaccard(grams, other) >= near_threshold:
                    duplicate = True
                    break
            if duplicate:
                near += 1
                continue
            kept_shingles.append(grams)
        keep.append(index)
    return keep, exact, near
