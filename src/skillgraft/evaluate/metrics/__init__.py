"""The metric registry: names used in suites -> option defaults, required fields, scorers.

Each metric is a small pure function in a sibling module; this file only adapts them to
probe items. A metric returns numbers under its own name (the headline, averaged into the
set score) and may add `NAME.sub` numbers and non-numeric `details`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillgraft.errors import UserError
from skillgraft.evaluate.metrics import answers, judge, language, memorization, repetition, rouge, style
from skillgraft.evaluate.text import first_segment

OPTIONS: dict[str, dict[str, Any]] = {
    "keyword": {"segment": "first"},
    "rouge2": {"tokenizer": "auto", "segment": "all"},
    "exact_match": {},
    "choice_loglik": {"normalize": "none"},
    "choice_generated": {},
    "language": {"expected": None, "candidates": None},
    "style": {"target": None, "markers": {}},
    "repetition": {"n": 3},
    "memorization": {"corpus": None, "n": 4},
    "judge": {"endpoint": None, "model": None, "rubric": judge.DEFAULT_RUBRIC, "timeout": 60.0},
    "kept": {"of": "keyword"},
    "general_kl": {},
}
# Metrics that compare with a reference model's answers (`evaluate.reference`): the runner
# computes those answers once (cached) and hands each item its own.
NEEDS_REFERENCE = ("kept", "general_kl")
# Scored without the model's generated answer (log-probabilities only): a set whose every
# metric is one of these is not generated at all, so a retention objective on `general_kl`
# costs one forward pass per item instead of a whole generation (a sweep's graft trials).
NO_OUTPUT = ("general_kl", "choice_loglik")
# Not a share of the baseline's score: no "retention" ratio is printed for these.
NOT_RATIOS = ("kept", "general_kl", "repetition", "memorization")
NEEDS: dict[str, tuple[str, ...]] = {
    "keyword": ("keywords",), "rouge2": ("reference",), "exact_match": ("reference",),
    "choice_loglik": ("choices", "answer"), "choice_generated": ("choices", "answer"), "judge": ("reference",),
    "kept": ("keywords",),
}


def options_of(spec) -> dict[str, Any]:
    """The metric's options with defaults filled in."""
    return {**OPTIONS[spec.name], **spec.options}


def check_metric(spec, probe_set) -> None:
    """Raise a UserError naming file/line/option when a set cannot be scored by `spec`."""
    unknown = set(spec.options) - set(OPTIONS[spec.name])
    if unknown:
        raise UserError(f"set {probe_set.name}: metric {spec.name} has no option {sorted(unknown)[0]!r} "
                        f"(options: {', '.join(OPTIONS[spec.name]) or 'none'})")
    opts = options_of(spec)
    for item in probe_set.items:
        for needed in NEEDS.get(spec.name, ()):
            if getattr(item, needed) is None:
                raise UserError(f"{probe_set.source}:{item._line}: item {item.id} lacks `{needed}`, "
                                f"which metric {spec.name} needs")
        if spec.name == "language" and not (item.language or probe_set.language or opts["expected"]):
            raise UserError(f"{probe_set.source}:{item._line}: item {item.id} has no `language` and set "
                            f"{probe_set.name} names no language, which metric language needs")
    if spec.name == "keyword" and opts["segment"] not in ("first", "all"):
        raise UserError(f"set {probe_set.name}: keyword segment must be first or all")
    if spec.name == "style" and opts["target"] not in (None, "polite", "plain"):
        raise UserError(f"set {probe_set.name}: style target must be polite or plain")
    if spec.name == "kept" and opts["of"] != "keyword":
        raise UserError(f"set {probe_set.name}: metric kept counts keyword answers (of: keyword)")
    if spec.name == "rouge2" and opts["tokenizer"] not in ("auto", "stock", "cjk"):
        raise UserError(f"set {probe_set.name}: rouge2 tokenizer must be auto, stock or cjk")
    if spec.name == "choice_loglik" and opts["normalize"] not in ("none", "chars"):
        raise UserError(f"set {probe_set.name}: choice_loglik normalize must be none or chars")
    if spec.name == "language":
        codes = {item.language for item in probe_set.items} | {probe_set.language, opts["expected"]}
        for code in sorted(c for c in codes | set(opts["candidates"] or ()) if c is not None):
            try:
                language.check_code(code)
            except ValueError as exc:
                raise UserError(f"set {probe_set.name}: metric language: {exc}") from None
    if spec.name == "style":
        if not isinstance(opts["markers"], dict):
            raise UserError(f"set {probe_set.name}: style markers must be a mapping NAME: REGEX")
        for marker, pattern in opts["markers"].items():
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise UserError(f"set {probe_set.name}: style marker {marker!r} is not a valid regex ({exc})") from None
    for key in ("n", "timeout"):
        if key in opts and not (isinstance(opts[key], (int, float)) and not isinstance(opts[key], bool) and opts[key] > 0):
            raise UserError(f"set {probe_set.name}: metric {spec.name} option {key} must be a positive number")
    if spec.name == "memorization":
        if not opts["corpus"] or not Path(opts["corpus"]).is_file():
            raise UserError(f"set {probe_set.name}: metric memorization needs option `corpus` naming an "
                            f"existing training text file (got {opts['corpus']!r})")
    if spec.name == "judge" and not opts["endpoint"]:
        raise UserError(f"set {probe_set.name}: metric judge needs option `endpoint` (an http(s)://…/v1 URL)")


def load_corpus(path: str) -> list[str]:
    """Training texts: JSONL (`text`, `output` or `content` field per line) or one text per line."""
    file = Path(path)
    docs = []
    for lineno, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if file.suffix == ".jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{file}:{lineno}: malformed JSON ({exc.msg})") from None
            text = next((row[k] for k in ("text", "output", "content") if isinstance(row.get(k), str)), None)
            if text is None:
                raise UserError(f"{file}:{lineno}: no `text`, `output` or `content` string field")
            docs.append(text)
        else:
            docs.append(line)
    return docs


@dataclass
class MetricContext:
    """Caches shared across items: corpora and their n-grams, judge backends."""

    corpora: dict[tuple[str, int], tuple[list[str], set]] = field(default_factory=dict)
    judges: dict[tuple[str, str | None], Any] = field(default_factory=dict)
    references: dict[str, dict[str, Any]] = field(default_factory=dict)  # set -> item id -> ReferenceAnswer

    def corpus(self, path: str, n: int):
        key = (path, n)
        if key not in self.corpora:
            docs = load_corpus(path)
            self.corpora[key] = (docs, memorization.corpus_ngrams(docs, n))
        return self.corpora[key]

    def judge(self, endpoint: str, model: str | None, timeout: float):
        key = (endpoint, model)
        if key not in self.judges:
            from skillgraft.evaluate.backends.endpoint import EndpointBackend

            self.judges[key] = EndpointBackend(endpoint, model=model, timeout=timeout)
        return self.judges[key]


def is_correct(output: str, item) -> bool:
    """An answer `kept` counts as right: every keyword present (keyword score 1)."""
    return answers.keyword_score(output, item.keywords) == 1.0


def score_keys(spec) -> list[str]:
    """Every score name `score_item` gives for this metric spec (`style.marker.persona`,
    `repetition.distinct_2`, ...), known before anything runs: a sweep objective naming a key
    no item would carry is refused when the sweep loads, not after its first trial."""
    name, opts = spec.name, options_of(spec)
    if name == "style":
        keys = [f"style.{k}" for k in style.style_scores("", opts["markers"])]
        return keys + (["style"] if opts["target"] else [])
    if name == "repetition":
        return ["repetition"] + [f"repetition.{k}" for k in repetition.repetition_scores("", int(opts["n"]))
                                 if k != "rate"]
    if name == "memorization":
        return ["memorization"] + [f"memorization.{k}" for k in memorization.memorization_scores("", [], 4, set())
                                   if k != "copied"]
    return [name]


def score_item(spec, item, output: str, *, probe_set, ctx: MetricContext, logliks: list[float] | None = None,
               reference=None, kl: float | None = None) -> tuple[dict[str, float | None], dict[str, Any]]:
    """(numbers, details) of one metric on one item's output. `reference`: the reference
    model's `ReferenceAnswer` to this item; `kl`: the candidate's `general_kl` on it."""
    name, opts = spec.name, options_of(spec)
    if name in NEEDS_REFERENCE and reference is None:
        return {name: None}, {}  # no reference model to compare with
    if name == "kept":
        # counted only where the reference was right: the set's mean is the share kept
        if not is_correct(reference.text, item):
            return {name: None}, {"kept.reference": reference.text}
        return {name: float(is_correct(output, item))}, {"kept.reference": reference.text}
    if name == "general_kl":
        return {name: kl}, {}
    if name == "keyword":
        return {name: answers.keyword_score(output, item.keywords, segment=opts["segment"])}, {}
    if name == "rouge2":
        text = first_segment(output) if opts["segment"] == "first" else output
        return {name: rouge.rouge2(text, item.reference, tokenizer=opts["tokenizer"])}, {}
    if name == "exact_match":
        got = answers.final_number(output) if answers._is_only_number(item.reference) else first_segment(output)
        return {name: answers.exact_match(output, item.reference)}, {"exact_match.answer": None if got is None else str(got)}
    correct = answers.answer_index(item.choices, item.answer) if item.choices else None
    if name == "choice_loglik":
        values = list(logliks or [])
        if opts["normalize"] == "chars":
            values = [v / max(1, len(c)) for v, c in zip(values, item.choices)]
        return {name: answers.choice_loglik(values, correct)}, {"choice_loglik.logliks": [round(v, 5) for v in logliks or []]}
    if name == "choice_generated":
        picked = answers.parse_choice(output, item.choices)
        return {name: float(picked == correct)}, {"choice_generated.picked": picked}
    if name == "language":
        expected = item.language or probe_set.language or opts["expected"]
        candidates = tuple(opts["candidates"] or language.DEFAULT_LANGUAGES)
        if language.too_short(output):
            return {name: None}, {"language.detected": None, "language.abstained": "too short to judge"}
        detected = language.detect_language(output, tuple(set(candidates) | {expected.lower()}))
        return {name: float(detected == expected.lower())}, {"language.detected": detected}
    if name == "style":
        parts = style.style_scores(output, opts["markers"])
        scores = {f"style.{k}": v for k, v in parts.items()}
        if opts["target"]:
            scores["style"] = parts[opts["target"]]
        return scores, {}
    if name == "repetition":
        parts = repetition.repetition_scores(output, int(opts["n"]))
        return {"repetition": parts.pop("rate"), **{f"repetition.{k}": v for k, v in parts.items()}}, {}
    if name == "memorization":
        docs, grams = ctx.corpus(opts["corpus"], int(opts["n"]))
        parts = memorization.memorization_scores(output, docs, int(opts["n"]), grams)
        return {"memorization": parts.pop("copied"), **{f"memorization.{k}": v for k, v in parts.items()}}, {}
    if name == "judge":
        from skillgraft.evaluate.backends.base import GenerationSettings

        backend = ctx.judge(opts["endpoint"], opts["model"], float(opts["timeout"]))
        question = item.prompt if item.prompt is not None else item.messages[-1].content
        reply = backend.complete_one(judge.judge_messages(question, output, item.reference, opts["rubric"]),
                                     GenerationSettings(max_new_tokens=8))
        return {name: judge.parse_grade(reply)}, {"judge.reply": reply}
    raise AssertionError(f"unhandled metric {name}")  # pragma: no cover - names are validated
