"""Assembling the token rows a run trains and probes on, from the config's data section.

Shared by `train` and `data show`, so what `data show` prints is exactly what is trained.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from skillgraft.data.encode import Example, encode_all, pack
from skillgraft.data.records import check_format, read_records
from skillgraft.errors import UserError


@dataclass
class Prepared:
    rows: list[dict]
    examples: list[Example]
    validation_rows: list[dict]
    report: dict = field(default_factory=dict)


def load_tokenizer(model: str):
    """The training model's tokenizer (a transformers tokenizer; the model may be a folder,
    a Hugging Face id or `lab:NAME`), with a pad token."""
    from transformers import AutoTokenizer

    from skillgraft.checkpoint.kinds import local_model

    folder = local_model(model, "model").path
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"model: cannot load a tokenizer from {model}: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _records(path: str, fmt: str, what: str) -> list[dict]:
    records = read_records(path, what)
    if not records:
        raise UserError(f"{what}: {path} holds no examples")
    check_format(records, fmt, path)
    return records


def mix_in_records(mix) -> list[dict]:
    """N texts drawn (seeded) from the mix-in corpus, as `text` records."""
    corpus = read_records(mix.path, "data.mix_in.path")
    texts = [r for r in corpus if isinstance(r.get("text"), str) and r["text"].strip()]
    if mix.n > len(texts):
        raise UserError(f"data.mix_in: n={mix.n} but {mix.path} has only {len(texts)} texts")
    return random.Random(mix.seed).sample(texts, mix.n)


def check_data(config) -> None:
    """Read every data file the config names and check its records (non-empty, well-formed, the
    fields its format needs): a bad file fails in a second, before any model is loaded."""
    data = config.data
    _records(data.train, data.format, "data.train")
    if data.validation:
        _records(data.validation, data.format, "data.validation")
    if data.mix_in and data.mix_in.n:
        mix_in_records(data.mix_in)


def prepare_data(config, tokenizer) -> Prepared:
    """Encode train (plus mix-in) and validation data; pack if asked; report counts."""
    data = config.data
    kwargs = {"max_length": data.max_length, "overlong": data.overlong, "answer_only": data.answer_only,
              "qa_template": data.qa_template}
    examples, report = encode_all(_records(data.train, data.format, "data.train"), data.format, tokenizer,
                                  where=f"data.train {data.train}", **kwargs)
    if data.mix_in and data.mix_in.n:
        mixed, mix_report = encode_all(mix_in_records(data.mix_in), "text", tokenizer,
                                       where=f"data.mix_in {data.mix_in.path}", **kwargs)
        examples += mixed
        report["mix_in"] = mix_report["examples"]
        _count_in(report, mix_report)
    validation_rows: list[dict] = []
    if data.validation:
        val_examples, val_report = encode_all(_records(data.validation, data.format, "data.validation"),
                                              data.format, tokenizer, where=f"data.validation {data.validation}",
                                              **kwargs)
        validation_rows = [asdict(ex) for ex in val_examples]
        report["validation_examples"] = val_report["examples"]
    rows = pack(examples, data.max_length) if data.packing else [asdict(ex) for ex in examples]
    report["rows"] = len(rows)
    return Prepared(rows, examples, validation_rows, report)


def _count_in(report: dict, added: dict) -> None:
    for key in ("examples", "tokens", "learned_tokens", "overlong", "unknown_tokens"):
        report[key] += added[key]


def add_examples(prepared: Prepared, examples: list[Example], report: dict, data, name: str = "replay") -> Prepared:
    """`prepared` with more training examples (replayed chats; `report` is their `encode_all`
    report, counted in and kept under `name`), packed again if packing is on."""
    merged = prepared.examples + examples
    rows = pack(merged, data.max_length) if data.packing else [asdict(ex) for ex in merged]
    totals = dict(prepared.report)
    _count_in(totals, report)
    return Prepared(rows, merged, prepared.validation_rows, {**totals, name: report["examples"], "rows": len(rows)})


def general_rows(path: str | None, tokenizer, max_texts: int, max_length: int) -> list[dict]:
    """Held-out general texts for the perplexity probe (every token scored, cut to max_length)."""
    if not path:
        return []
    records = read_records(path, "monitor.general_text")
    texts = [r["text"] for r in records if isinstance(r.get("text"), str) and r["text"].strip()][:max_texts]
    if not texts:
        raise UserError(f"monitor.general_text: {path} holds no texts")
    rows = []
    for text in texts:
        ids = tokenizer(text)["input_ids"][:max_length]
        rows.append({"input_ids": ids, "labels": list(ids)})
    return rows
