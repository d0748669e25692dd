"""Text helpers shared by the metrics: normalisation, answer segments, script-aware units.

Kept apart from the metrics so every metric cuts "the answer" and "a token" the same way;
two metrics that disagree on where an answer ends would report incomparable numbers.
"""

from __future__ import annotations

import re
import unicodedata

# Han, Hiragana, Katakana (incl. half-width), Hangul syllables/jamo, CJK punctuation excluded.
_CJK = (
    "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\uff66-\uff9f\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
)
CJK_CHAR = re.compile(f"[{_CJK}]")
# A unit is one CJK character, or a run of letters/digits from any other script.
_UNIT = re.compile(f"[{_CJK}]|[^\\W{_CJK}_]+", re.UNICODE)
# The same, plus every other visible character as its own token (for degeneration: "〜〜〜〜",
# ", , , ," and "!!!!" are exactly what a broken model repeats).
_UNIT_ALL = re.compile(f"[{_CJK}]|[^\\W{_CJK}_]+|[^\\w\\s]|_", re.UNICODE)

# Where a model starts rambling on with a follow-up question (seed 003's failure mode):
# a blank line, or a new line that opens a new Q/A turn.
_NEXT_TURN = re.compile(
    r"\n\s*\n|\n\s*(?:Q|Question|User|Human|質問|問題|問|질문)\s*[.:：．]|<\|im_start\|>|<\|im_end\|>"
)
_SURROUNDING = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)


def has_cjk(text: str) -> bool:
    """True when the text contains any Chinese, Japanese or Korean character."""
    return bool(CJK_CHAR.search(text))


def nfkc(text: str) -> str:
    """Unicode NFKC: folds full-width ASCII and half-width katakana to their usual forms."""
    return unicodedata.normalize("NFKC", text)


def first_segment(text: str) -> str:
    """The answer proper: the output up to the first blank line or new Q/A turn."""
    match = _NEXT_TURN.search(text)
    return (text[: match.start()] if match else text).strip()


def normalize_answer(text: str) -> str:
    """Case-, width- and whitespace-insensitive form, without surrounding punctuation."""
    text = nfkc(text).casefold()
    text = " ".join(text.split())
    return _SURROUNDING.sub("", text)


def units(text: str) -> list[str]:
    """Tokens for n-gram statistics: CJK characters one by one, other words whole (lower-cased).

    Whitespace alone cannot split Japanese, and characters alone would make English n-grams
    meaningless, so the unit depends on the script of each run.
    """
    return _UNIT.findall(nfkc(text).casefold())


def units_with_symbols(text: str) -> list[str]:
    """`units` plus punctuation and symbols, one token per character."""
    return _UNIT_ALL.findall(nfkc(text).casefold())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous n-grams of a token list (empty when shorter than n)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
