"""Optional LLM judge (seed 003 used GPT-4): a 1-10 grade against a reference answer.

The judge is any chat model behind the OpenAI-compatible endpoint backend; the rubric text
is stored in the results settings so a score can be traced to the exact instructions.
"""

from __future__ import annotations

import re

DEFAULT_RUBRIC = (
    "You grade an answer to a question against a reference answer. Judge only whether the "
    "answer conveys the knowledge in the reference (ignore style and language). Reply with "
    "one integer from 1 (wrong or missing) to 10 (fully correct and complete), nothing else."
)

_GRADE = re.compile(r"\b(10|[1-9])\b")


def judge_messages(question: str, answer: str, reference: str, rubric: str = DEFAULT_RUBRIC) -> list[dict]:
    """Chat messages asking the judge for a grade."""
    return [
        {"role": "system", "content": rubric},
        {"role": "user", "content": f"Question:\n{question}\n\nReference answer:\n{reference}\n\n"
                                    f"Answer to grade:\n{answer}\n\nGrade (1-10):"},
    ]


def parse_grade(reply: str) -> float | None:
    """The first integer 1..10 in the judge's reply, or None when it gave none."""
    match = _GRADE.search(reply)
    return float(match.group(1)) if match else None
