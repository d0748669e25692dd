"""Answer-checking metrics: keywords, exact match, multiple choice (seed 003, GSM8K style).

Pure functions of strings and numbers; the runner feeds them outputs and probe fields.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Sequence

from skillgraft.evaluate.text import first_segment, nfkc, normalize_answer

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_WORDISH = re.compile(r"[0-9A-Za-z\u00c0-\u024f]")


def split_keywords(keywords: str | Sequence[str]) -> list[str]:
    """Keywords as a list: a `;`-separated string (seed 003's format) or a list already."""
    parts = keywords.split(";") if isinstance(keywords, str) else list(keywords)
    return [part.strip() for part in parts if part.strip()]


def keyword_score(output: str, keywords: str | Sequence[str], *, segment: str = "first") -> float:
    """Fraction of keywords present in the answer (case- and width-insensitive).

    `segment="first"` looks only at the first answer segment; `segment="all"` reproduces the
    original scorer, which also credited keywords in rambling follow-up Q/A pairs.
    """
    wanted = split_keywords(keywords)
    if not wanted:
        raise ValueError("keyword_score needs at least one keyword")
    if segment not in ("first", "all"):
        raise ValueError(f"segment must be 'first' or 'all', not {segment!r}")
    haystack = normalize_answer(first_segment(output) if segment == "first" else output)
    return sum(_contains(haystack, normalize_answer(k)) for k in wanted) / len(wanted)


def _contains(haystack: str, keyword: str) -> bool:
    """Substring match; a keyword that starts/ends with a Latin letter or digit must not touch
    another one there, so "O" is not found in "Tokyo" nor "7" in "17"."""
    if not keyword:
        return False
    start = r"(?<![0-9a-z\u00c0-\u024f])" if _WORDISH.match(keyword[0]) else ""
    end = r"(?![0-9a-z\u00c0-\u024f])" if _WORDISH.match(keyword[-1]) else ""
    return re.search(start + re.escape(keyword) + end, haystack) is not None


def parse_number(text: str) -> Decimal | None:
    """A number written in text (full-width digits and thousands separators allowed)."""
    match = _NUMBER.search(nfkc(text))
    if not match:
        return None
    try:
        return Decimal(match.group(0).replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the regex only admits valid numbers
        return None


def final_number(output: str) -> Decimal | None:
    """The final answer of a worked solution: inside the last `\\boxed{}`, else the last number."""
    text = nfkc(output)
    boxed = _BOXED.findall(text)
    if boxed:
        found = parse_number(boxed[-1])
        if found is not None:
            return found
    numbers = _NUMBER.findall(text)
    return Decimal(numbers[-1].replace(",", "")) if numbers else None


def exact_match(output: str, reference: str) -> float:
    """1.0 when the output's final answer equals the reference, else 0.0.

    A numeric reference compares numbers (`\\boxed{}` first, else the last number in the
    output); any other reference compares the normalised first answer segment.
    """
    if _is_only_number(reference):
        got = final_number(output)
        return float(got is not None and got == parse_number(reference))
    return float(normalize_answer(first_segment(output)) == normalize_answer(reference))


def _is_only_number(text: str) -> bool:
    stripped = nfkc(text).strip()
    match = _NUMBER.fullmatch(stripped)
    return match is not None


def answer_index(choices: Sequence[str], answer: int | str) -> int:
    """The 0-based index of the right choice; `answer` is an index or the choice text."""
    if isinstance(answer, bool):
        raise ValueError("answer must be a 0-based index or one of the choices")
    if isinstance(answer, int):
        if not 0 <= answer < len(choices):
            raise ValueError(f"answer index {answer} is outside 0..{len(choices) - 1}")
        return answer
    if answer in choices:
        return list(choices).index(answer)
    raise ValueError(f"answer {answer!r} is not one of the choices")


def choice_loglik(logliks: Sequence[float], correct: int) -> float:
    """1.0 when the right choice has the highest log-likelihood (ties count as wrong)."""
    best = max(logliks)
    winners = [i for i, value in enumerate(logliks) if value == best]
    return float(winners == [correct])


def parse_choice(output: str, choices: Sequence[str]) -> int | None:
    """The choice a generated answer names, as a 0-based index, or None.

    Seed 003 numbered the choices 1..N in the prompt and read the number the model wrote;
    failing a number in range, a first answer segment naming exactly one choice text counts.
    """
    answer = first_segment(output)
    for match in _NUMBER.finditer(nfkc(answer)):
        value = match.group(0)
        if value.isdigit() and 1 <= int(value) <= len(choices):
            return int(value) - 1
    norm = normalize_answer(answer)
    named = [i for i, choice in enumerate(choices) if normalize_answer(choice) and normalize_answer(choice) in norm]
    return named[0] if len(named) == 1 else None


def choice_generated(output: str, choices: Sequence[str], correct: int) -> float:
    """1.0 when the generated answer names the right choice."""
    return float(parse_choice(output, choices) == correct)


def retention(after: float, before: float) -> float:
    """Score after / score before on the same probes (NaN when the baseline scored 0)."""
    if before == 0:
        return math.nan
    return after / before
