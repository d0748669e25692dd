"""ROUGE-2 F1 through `rouge-score`, with a tokenizer that does not drop CJK text.

The stock `rouge-score` tokenizer lower-cases and replaces every non-`[a-z0-9]` character
by a space, so a Japanese or Korean answer becomes zero tokens and scores 0 against any
reference. The CJK-aware tokenizer keeps each CJK character as a token (character
n-grams, the usual choice for unsegmented scripts) and other-script words whole.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from skillgraft.evaluate.text import has_cjk, units


class UnitTokenizer:
    """`rouge-score` tokenizer interface over `skillgraft.evaluate.text.units`."""

    def tokenize(self, text: str) -> list[str]:
        return units(text)


class CallableTokenizer:
    """Wrap any `str -> list[str]` (e.g. a model tokenizer's `tokenize`) for `rouge-score`."""

    def __init__(self, fn: Callable[[str], list[str]]):
        self.fn = fn

    def tokenize(self, text: str) -> list[str]:
        return list(self.fn(text))


@lru_cache(maxsize=4)
def _scorer(kind: str):
    from rouge_score import rouge_scorer

    if kind == "stock":
        return rouge_scorer.RougeScorer(["rouge2"])
    return rouge_scorer.RougeScorer(["rouge2"], tokenizer=UnitTokenizer())


def rouge2(output: str, reference: str, *, tokenizer: str | Callable[[str], list[str]] = "auto") -> float:
    """ROUGE-2 F1 of `output` against `reference`.

    `tokenizer`: "auto" (CJK-aware when either text has CJK characters, the stock
    rouge-score tokenizer otherwise), "stock", "cjk", or a callable giving tokens.
    """
    if callable(tokenizer):
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rouge2"], tokenizer=CallableTokenizer(tokenizer))
    else:
        if tokenizer == "auto":
            tokenizer = "cjk" if has_cjk(output) or has_cjk(reference) else "stock"
        if tokenizer not in ("stock", "cjk"):
            raise ValueError(f"rouge2 tokenizer must be auto, stock or cjk, not {tokenizer!r}")
        scorer = _scorer(tokenizer)
    return float(scorer.score(reference, output)["rouge2"].fmeasure)
