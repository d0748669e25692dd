"""Language of an output, with `lingua-language-detector` (models ship inside the wheel).

The Chat Vector failure mode (seeds 001, 004) is a grafted model answering in English;
this metric makes that visible per item.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Languages the detector chooses between unless told otherwise: the project's languages
# plus common neighbours, so a Chinese or French answer is not forced into ja/en.
DEFAULT_LANGUAGES = ("en", "ja", "ko", "zh", "fr", "de", "es", "ru", "pt", "it")


def check_code(code: str) -> str:
    """The lower-case code when lingua knows it; ValueError otherwise."""
    from lingua import IsoCode639_1

    if not isinstance(code, str) or not hasattr(IsoCode639_1, code.upper()):
        raise ValueError(f"unknown ISO 639-1 language code {code!r}")
    return code.lower()


@lru_cache(maxsize=8)
def _detector(codes: tuple[str, ...]):
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    languages = []
    for code in codes:
        try:
            languages.append(Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())))
        except AttributeError:
            raise ValueError(f"unknown ISO 639-1 language code {code!r}") from None
    return LanguageDetectorBuilder.from_languages(*languages).build()


# Scripts that name their language on their own (kana, hangul, CJK ideographs): two such
# characters are evidence; in alphabetic scripts a name ("Paris", "Tokyo") or a number is
# not, so the metric abstains on answers of fewer than three words.
_SELF_EVIDENT = re.compile(r"[\u3040-\u30ff\uac00-\ud7af\u4e00-\u9fff]")
_WORD = re.compile(r"[^\W\d_]+")
MIN_WORDS = 3


def too_short(text: str) -> bool:
    """True when `text` carries too little to say which language it is in."""
    if len(_SELF_EVIDENT.findall(text)) >= 2:
        return False
    return len(_WORD.findall(text)) < MIN_WORDS


def detect_language(text: str, candidates: tuple[str, ...] = DEFAULT_LANGUAGES) -> str | None:
    """ISO 639-1 code of the text's language among `candidates`, or None if undecidable."""
    if not text.strip():
        return None
    found = _detector(tuple(sorted(set(candidates))))
    result = found.detect_language_of(text)
    return None if result is None else result.iso_code_639_1.name.lower()


def language_match(text: str, expected: str, candidates: tuple[str, ...] = DEFAULT_LANGUAGES) -> float:
    """1.0 when the output is detected as the `expected` language, else 0.0."""
    expected = expected.lower()
    return float(detect_language(text, tuple(set(candidates) | {expected})) == expected)
