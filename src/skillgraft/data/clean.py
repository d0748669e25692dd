"""Text clean-up rules for fine-tuning data: width normalisation, run capping, scrubbing.

Seed 002 cleaned ~150 tweets by hand before training a persona: tweets written on a phone
and on a PC mixed half- and full-width symbols and digits, runs like `〜〜〜〜〜〜` taught the
model to emit `〜` forever, and personal data had to go. Each rule here is a pure
`str -> str` function (plus counts) so that `data prep` can chain them and report what
each one changed.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

# Seed 002's table: half-width `!?~` become full-width `！？〜`, full-width digits half-width.
_SEED002_TABLE = str.maketrans(
    {"!": "！", "?": "？", "~": "〜", **{chr(0xFF10 + d): str(d) for d in range(10)}}
)

NORMALISATIONS = ("none", "seed002", "nfkc", "nfkc+seed002")


def normalise_width(text: str, preset: str = "seed002") -> str:
    """Apply a width-normalisation preset.

    `seed002`: the seed's rules (half-width `!?~` → full-width, full-width digits →
    half-width). `nfkc`: plain Unicode NFKC (full-width ASCII → half-width, half-width
    katakana → full-width). `nfkc+seed002`: NFKC first, then the seed's symbol rule, which
    suits Japanese text whose sentence-final `！？〜` carry the style. `none`: unchanged.
    """
    if preset == "none":
        return text
    if preset == "seed002":
        return text.translate(_SEED002_TABLE)
    if preset == "nfkc":
        return unicodedata.normalize("NFKC", text)
    if preset == "nfkc+seed002":
        return unicodedata.normalize("NFKC", text).translate(_SEED002_TABLE)
    raise ValueError(f"unknown normalisation {preset!r}; choose from {', '.join(NORMALISATIONS)}")


def cap_repeats(text: str, max_run: int = 2) -> tuple[str, int]:
    """Cap every run of one repeated character at `max_run` characters.

    Seed 002: `まじかああ〜〜〜〜〜〜` → `まじかああ〜〜`, because long runs teach the model that
    after `〜〜` comes another `〜`. Every character counts (also `ああああ`, `wwww`), which is
    what the seed did for `〜` and what a persona corpus needs. `max_run <= 0` disables it.
    Returns the text and how many runs were shortened.
    """
    if max_run <= 0:
        return text, 0
    pattern = re.compile(r"(.)\1{" + str(max_run) + ",}", re.DOTALL)
    count = 0

    def _shorten(match: re.Match) -> str:
        nonlocal count
        count += 1
        return match.group(1) * max_run

    return pattern.sub(_shorten, text), count


# Scrubbing patterns, ordered: e-mail before @handle, URL before phone (URLs hold digits).
_SCRUB_PATTERNS: list[tuple[str, re.Pattern, str]] = [
    ("email", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<EMAIL>"),
    ("url", re.compile(r"(?:https?://|www\.)[^\s\u3000-\u303f\uff01-\uff0f]+", re.IGNORECASE), "<URL>"),
    ("phone", re.compile(r"(?<![\w])(?:\+?\d{1,3}[-\s.]?)?(?:\(\d{1,4}\)|\d{2,4})[-\s.]\d{2,4}[-\s.]\d{3,4}(?![\w])"),
     "<PHONE>"),
    ("handle", re.compile(r"(?<![\w@])@[A-Za-z0-9_]{1,30}"), "<USER>"),
]
SCRUB_KINDS = tuple(kind for kind, _, _ in _SCRUB_PATTERNS)


def scrub(text: str, kinds: tuple[str, ...] = SCRUB_KINDS, placeholder: bool = True) -> tuple[str, Counter]:
    """Replace e-mails, URLs, phone numbers and @handles; return the text and counts per kind.

    With `placeholder=False` the matches are deleted instead of replaced by `<EMAIL>` etc.
    """
    counts: Counter = Counter()
    for kind, pattern, token in _SCRUB_PATTERNS:
        if kind not in kinds:
            continue
        text, n = pattern.subn(token if placeholder else "", text)
        if n:
            counts[kind] += n
    if not placeholder:
        text = re.sub(r"[ \t]{2,}", " ", text).strip()
    return text, counts
