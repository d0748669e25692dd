"""Style markers (seed 002): Japanese plain vs polite endings, sentence-final symbols, regexes.

A persona fine-tune is judged by how it ends its sentences: です/ます (polite) vs だ/plain
forms, and symbols such as `！`, `〜` or a trailing `w`. These are heuristics on sentence
endings, not a parser; they are meant to compare models on the same probes.
"""

from __future__ import annotations

import re
from typing import Mapping

from skillgraft.evaluate.text import nfkc

_SENTENCE = re.compile(r"[^。．.!?！？\n]+[。．.!?！？]*")
_SOFT_END = re.compile(r"(?<=[〜～~wｗ♪])\s+")
# Sentence-final particles that may follow either form (ね, よ, か, な...).
_PARTICLES = "ねよかなわぞさの"
_POLITE = re.compile(
    r"(?:です|ます|でした|ました|ません|でしょう|ましょう|ください|下さい|ございます)"
    f"[{_PARTICLES}]*$"
)
_PLAIN = re.compile(r"(?:だ|だった|である|じゃない|ではない|[るたいうくすつぬむぶぐだ]|ない|よ|ね)" f"[{_PARTICLES}]*$")
_FINAL_SYMBOLS = "!！~〜～wｗ笑♪"
_TRAILING = re.compile(f"[\\s{re.escape(_FINAL_SYMBOLS)}。．.?？…・)）」』\"']+$")
_HAS_JA = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def sentences(text: str) -> list[str]:
    """Sentences split at 。．.!?！？, newlines, and spaces after 〜/w/♪; final symbols kept."""
    parts = []
    for piece in _SENTENCE.findall(text):
        # casual writing ends a sentence with 〜 / w / ♪ and a space instead of 。
        parts.extend(_SOFT_END.split(piece))
    return [s.strip() for s in parts if s.strip()]


def ending_form(sentence: str) -> str | None:
    """'polite', 'plain', or None (not Japanese, or an ending the heuristic cannot place)."""
    core = _TRAILING.sub("", sentence)
    if not _HAS_JA.search(core):
        return None
    if _POLITE.search(core):
        return "polite"
    if _PLAIN.search(core):
        return "plain"
    return None


def final_symbol(sentence: str) -> bool:
    """True when the sentence ends with one of ! ！ ~ 〜 w ｗ 笑 ♪ (ignoring trailing spaces)."""
    stripped = sentence.rstrip()
    stripped = stripped.rstrip("。．.")
    return bool(stripped) and stripped[-1] in _FINAL_SYMBOLS


def style_scores(text: str, markers: Mapping[str, str] | None = None) -> dict[str, float]:
    """Style measures of one output.

    `polite` / `plain`: share of Japanese sentences with that ending form (0 when none);
    `symbols`: share of sentences ending with a final symbol; `marker.NAME`: 1.0 when the
    user regex NAME matches anywhere in the (NFKC-normalised) text.
    """
    parts = sentences(text)
    forms = [ending_form(s) for s in parts]
    placed = [f for f in forms if f is not None]
    scores = {
        "polite": placed.count("polite") / len(placed) if placed else 0.0,
        "plain": placed.count("plain") / len(placed) if placed else 0.0,
        "symbols": sum(final_symbol(s) for s in parts) / len(parts) if parts else 0.0,
    }
    normalized = nfkc(text)
    for name, pattern in (markers or {}).items():
        scores[f"marker.{name}"] = float(re.search(pattern, normalized) is not None)
    return scores
