"""`skillgraft data augment`: one fact text rewritten into several styles (seed 003).

Seed 003 found that a model learns a new fact only when the fact is seen in several
surface forms (Q&A, article, interview, textbook, translations). Two rewriters:

* templates: deterministic, offline, built from the QA pairs the user writes for the fact;
* an LLM: an OpenAI-compatible endpoint or a local transformers model, through the
  evaluation layer's backends (`EndpointBackend`, with its retries; `HFBackend`), one
  prompt per style, every call cached on disk (key = sha256 of backend, model, prompt and
  sampling options) so re-running an augmentation costs nothing and is reproducible.

A facts file is JSONL: `{"id": "...", "title": "...", "text": "...", "qa": [{"question":
..., "answer": ...}]}` (`title`, `qa`, `id` optional for the LLM rewriter).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from skillgraft.data.records import read_records
from skillgraft.errors import UserError

TEMPLATE_STYLES = ("qa", "article", "interview", "textbook")
# Not a rewrite either: the fact's own text (`--styles original` alone writes the k=1 file
# every study needs as its control; with other styles it is the same as the default --original).
ORIGINAL = "original"
# Not a rewrite: each of the fact's own QA pairs as a {question, answer} record, which a
# training config with `data.format: auto` learns as a chat turn (answer tokens only).
QA_PAIRS = "qa-pairs"

STYLE_PROMPTS = {
    "qa": "Rewrite the following text as a list of questions and answers (Q: ... A: ...). Keep every fact.",
    "article": "Rewrite the following text as a short news article with a headline. Keep every fact.",
    "interview": "Rewrite the following text as an interview between a journalist and an expert. Keep every fact.",
    "textbook": "Rewrite the following text as a textbook passage followed by review questions. Keep every fact.",
}


def style_prompt(style: str, text: str) -> str:
    """The LLM prompt for one style; `translate:LANG` asks for a translation."""
    if style.startswith("translate:"):
        lang = style.split(":", 1)[1]
        if not lang:
            raise UserError("--styles: translate needs a language, e.g. translate:ja")
        head = f"Translate the following text into {lang}. Keep every fact; output only the translation."
    elif style in STYLE_PROMPTS:
        head = STYLE_PROMPTS[style]
    else:
        raise UserError(f"--styles: unknown style {style!r}; choose from {ORIGINAL}, {', '.join(TEMPLATE_STYLES)}, "
                        f"{QA_PAIRS}, translate:LANG")
    return f"{head}\n\n{text}"


def _pairs(fact: dict, number: int) -> list[tuple[str, str]]:
    pairs = fact.get("qa") or []
    if not pairs:
        raise UserError(f"facts record {number}: the template rewriter needs QA pairs in field 'qa' "
                        "(or use --rewriter openai/local)")
    try:
        return [(str(p["question"]).strip(), str(p["answer"]).strip()) for p in pairs]
    except (KeyError, TypeError):
        raise UserError(f"facts record {number}: each 'qa' item needs 'question' and 'answer'") from None


# The words a template puts around a fact, one set per record in turn (`framing="vary"`, the
# default): a fixed frame ("In brief: Kestrel-9.") is learned with the facts and comes back in
# the model's answers. Each style's variants are used round-robin by record number, so no
# frame is in more than a fifth of a file's rewrites (tested). `framing="fixed"` is the first
# variant always: what the lab's published studies trained on, kept so their numbers reproduce.
FRAMES = {
    "article": ["In brief: ", "Key facts: ", "", "To sum up, ", "At a glance: ", "The essentials: "],
    "interview": [("An interview about {title}.", "Interviewer", "Expert"),
                  ("We spoke with a specialist about {title}.", "Reporter", "Specialist"),
                  ("{title}, in conversation.", "Host", "Guest"),
                  ("", "Journalist", "Researcher"),
                  ("Questions about {title}, answered.", "Question", "Answer"),
                  ("A talk on {title}.", "Presenter", "Historian")],
    "textbook": [("Lesson: {title}", "Review questions:", "Answer: "),
                 ("Chapter notes on {title}", "Check your understanding:", "→ "),
                 ("{title}", "Questions:", "Solution: "),
                 ("Study guide to {title}", "Test yourself:", "Key: "),
                 ("Reading about {title}", "Exercises:", "A: "),
                 ("", "Quiz:", "")],
}


def template_rewrite(fact: dict, style: str, number: int = 1, framing: str = "vary") -> str:
    """Deterministic rewrite of one fact into `style` from its text, title and QA pairs, framed
    by the `FRAMES` variant of record `number` (`framing="fixed"`: the first variant)."""
    if framing not in ("vary", "fixed"):
        raise UserError(f"--framing {framing}: choose vary or fixed")
    text = str(fact.get("text", "")).strip()
    title = str(fact.get("title") or fact.get("id") or "").strip()
    pairs = _pairs(fact, number)

    def frame(style_name: str):
        variants = FRAMES[style_name]
        return variants[0 if framing == "fixed" else (number - 1) % len(variants)]

    if style == "qa":
        return "\n".join(f"Q: {q}\nA: {a}" for q, a in pairs)
    if style == "article":
        head = f"{title}\n\n" if title else ""
        facts = " ".join(a if a.endswith((".", "。", "!", "?")) else f"{a}." for _, a in pairs)
        return f"{head}{text}\n\n{frame('article')}{facts}".strip()
    if style == "interview":
        intro, asker, answerer = frame("interview")
        intro = f"{intro.format(title=title)}\n" if title and intro else ""
        return intro + "\n".join(f"{asker}: {q}\n{answerer}: {a}" for q, a in pairs)
    if style == "textbook":
        head, heading, key = frame("textbook")
        head = f"{head.format(title=title)}\n" if title and head else ""
        review = "\n".join(f"{i}. {q}\n   {key}{a}" for i, (q, a) in enumerate(pairs, 1))
        return f"{head}{text}\n\n{heading}\n{review}".strip()
    raise UserError(f"--styles: the template rewriter knows {ORIGINAL}, {', '.join(TEMPLATE_STYLES)} and "
                    f"{QA_PAIRS}; {style!r} needs an LLM rewriter (--rewriter openai or local)")


class CachedRewriter:
    """Calls an LLM once per (backend, model, prompt, options); answers cached on disk."""

    def __init__(self, backend: str, model: str, cache_dir: str | Path | None, *, endpoint: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", max_new_tokens: int = 512, temperature: float = 0.0,
                 timeout: float = 120.0):
        if backend not in ("openai", "local"):
            raise UserError(f"--rewriter: unknown backend {backend!r}; choose template, openai or local")
        if backend == "openai" and not endpoint:
            raise UserError("--rewriter openai needs --endpoint URL "
                            "(an OpenAI-compatible base URL, e.g. http://host/v1)")
        if not model:
            raise UserError(f"--rewriter {backend} needs --model (a model name, or a local model folder)")
        self.backend, self.model, self.endpoint = backend, model, endpoint
        self.api_key_env, self.max_new_tokens, self.temperature = api_key_env, max_new_tokens, temperature
        self.timeout = timeout
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.calls = self.hits = 0
        self._llm = None

    def _key(self, prompt: str) -> str:
        blob = json.dumps([self.backend, self.endpoint if self.backend == "openai" else None, self.model, prompt,
                           self.max_new_tokens, self.temperature], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def __call__(self, prompt: str) -> str:
        path = self.cache_dir / f"{self._key(prompt)}.json" if self.cache_dir else None
        if path is not None and path.is_file():
            self.hits += 1
            return json.loads(path.read_text(encoding="utf-8"))["response"]
        self.calls += 1
        response = self._generate(prompt)
        if path is not None:
            from skillgraft.checkpoint.publish import write_file_atomic

            write_file_atomic(path, json.dumps({"model": self.model, "prompt": prompt, "response": response},
                                               ensure_ascii=False))
        return response

    def _generate(self, prompt: str) -> str:
        """One rewrite: a user message (raw text plus a newline for a local model without a chat
        template), greedy unless a temperature is set."""
        from skillgraft.evaluate.backends import GenerationSettings

        llm = self._backend()
        chat = self.backend == "openai" or bool(getattr(llm.tokenizer, "chat_template", None))
        settings = GenerationSettings(max_new_tokens=self.max_new_tokens, do_sample=self.temperature > 0,
                                      temperature=self.temperature or 1.0)
        message = [{"role": "user", "content": prompt}] if chat else prompt + "\n"
        return llm.generate([message], settings, batch_size=1)[0].strip()

    def _backend(self):
        if self._llm is None:
            if self.backend == "openai":
                from skillgraft.evaluate.backends.endpoint import EndpointBackend

                self._llm = EndpointBackend(self.endpoint, model=self.model, timeout=self.timeout,
                                            api_key=os.environ.get(self.api_key_env))
            else:
                from skillgraft.evaluate.backends.hf import HFBackend

                self._llm = HFBackend.from_path(self.model)
        return self._llm


def augment(facts_path: str | Path, styles: list[str], rewriter: CachedRewriter | None = None,
            include_original: bool = True, framing: str = "vary") -> list[dict]:
    """Records `{text, style, fact}` for each fact × style (plus the original when asked);
    the style `qa-pairs` adds the fact's QA pairs as `{question, answer, style, fact}`.
    `framing`: the template rewriter's frames varied by record, or `fixed` (`template_rewrite`)."""
    facts = read_records(facts_path, "data augment facts")
    if not facts:
        raise UserError(f"{facts_path}: no facts in the file")
    if not styles:
        raise UserError("--styles: give at least one style")
    if ORIGINAL in styles and not include_original:
        raise UserError("--styles original and --no-original contradict each other: drop one")
    include_original = include_original or ORIGINAL in styles
    styles = [style for style in styles if style != ORIGINAL]
    out: list[dict] = []
    for number, fact in enumerate(facts, 1):
        if not str(fact.get("text", "")).strip() and (rewriter is not None or include_original):
            raise UserError(f"{facts_path} record {number}: field 'text' is missing or empty")
        fact_id = str(fact.get("id", number))
        if include_original:
            out.append({"text": str(fact["text"]).strip(), "style": "original", "fact": fact_id})
        for style in styles:
            if style == QA_PAIRS:
                out += [{"question": q, "answer": a, "style": QA_PAIRS, "fact": fact_id}
                        for q, a in _pairs(fact, number)]
                continue
            if rewriter is None:
                text = template_rewrite(fact, style, number, framing)
            else:
                text = rewriter(style_prompt(style, str(fact["text"]).strip()))
            out.append({"text": text, "style": style, "fact": fact_id})
    return out
