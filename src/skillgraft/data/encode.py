"""Turning records into token ids with a loss mask, the way training and `data show` see them.

The seeds' notebooks lost time to chat templates and EOS tokens that differed between
training and use. Here a QA pair or a chat is rendered with the tokenizer's *own* chat
template (the one inference will use), the answer spans are found by rendering prefixes
(so the mask is right for any prefix-stable template), EOS is appended and always learned,
and BOS is added once (not again when the template already writes it).
"""

from __future__ import annotations

from dataclasses import dataclass

from skillgraft.errors import UserError

IGNORE = -100
DEFAULT_QA_TEMPLATE = "Q: {question}\nA:"


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _chat_spans(tokenizer, messages: list[dict], where: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the character spans of every assistant turn."""
    full = _render(tokenizer, messages, False)
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        start = len(_render(tokenizer, messages[:i], True)) if i else 0
        upto = _render(tokenizer, messages[: i + 1], False)
        if not full.startswith(upto):
            raise UserError(f"{where}: the tokenizer's chat template is not prefix-stable, so answer spans cannot "
                            "be located; set data.answer_only=false")
        spans.append((start, len(upto)))
    return full, spans


def _qa_messages(record: dict) -> list[dict]:
    return [{"role": "user", "content": str(record["question"])},
            {"role": "assistant", "content": str(record["answer"])}]


def record_format(record: dict, fmt: str) -> str:
    """The format a record is read in: `fmt`, or with `auto` the record's own fields (`text`;
    `question` + `answer`; `messages`), so one file can hold documents and QA pairs."""
    if fmt != "auto":
        return fmt
    if "messages" in record:
        return "chat"
    if "question" in record and "answer" in record:
        return "qa"
    return "text"


def render(record: dict, fmt: str, tokenizer, qa_template: str = DEFAULT_QA_TEMPLATE,
           where: str = "data") -> tuple[str, list[tuple[int, int]] | None]:
    """Text of one record and the character spans that are answers (None: everything learned)."""
    fmt = record_format(record, fmt)
    if fmt == "text":
        return str(record["text"]), None
    if fmt == "qa" and not tokenizer.chat_template:
        prompt = qa_template.format(question=str(record["question"]))
        full = f"{prompt} {str(record['answer']).strip()}"
        return full, [(len(prompt), len(full))]
    messages = _qa_messages(record) if fmt == "qa" else record["messages"]
    if not tokenizer.chat_template:
        raise UserError(f"{where}: format 'chat' needs a tokenizer with a chat template; this one has none")
    return _chat_spans(tokenizer, messages, where)


def encode(record: dict, fmt: str, tokenizer, *, answer_only: bool = False,
           qa_template: str = DEFAULT_QA_TEMPLATE, where: str = "data") -> Example:
    """Token ids and labels (IGNORE where no loss) for one record; EOS appended and learned."""
    text, spans = render(record, fmt, tokenizer, qa_template, where)
    bos = tokenizer.bos_token
    add_special = not (bos and text.startswith(bos))
    encoded = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=answer_only and spans is not None)
    ids = list(encoded["input_ids"])
    if answer_only and spans is not None:
        labels = []
        for token_id, (start, end) in zip(ids, encoded["offset_mapping"]):
            learned = end > start and any(s <= start < e for s, e in spans)
            labels.append(token_id if learned else IGNORE)
    else:
        labels = list(ids)
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise UserError(f"{where}: the tokenizer has no EOS token; set one in its tokenizer_config.json")
    ids, labels = _end_once(ids, labels, tokenizer, chat=spans is not None and record_format(record, fmt) != "text"
                            and bool(tokenizer.chat_template))
    return Example(ids, labels)


def _end_once(ids: list[int], labels: list[int], tokenizer, chat: bool) -> tuple[list[int], list[int]]:
    """End the example with one learned end token, as the model will emit it.

    A rendered chat already ends its last turn with the template's end-of-turn token (ChatML's
    `<|im_end|>` then a newline): the whitespace after it is dropped and no EOS is added, so
    the model does not learn `<|im_end|>`, newline, `<|im_end|>`. Anything else gets EOS.
    """
    eos_id = tokenizer.eos_token_id
    if chat:
        from skillgraft.tokenizer import END_OF_TURN

        vocab = tokenizer.get_vocab()
        ends = {eos_id} | {vocab[t] for t in END_OF_TURN if t in vocab}
        last = len(ids)
        while last > 1 and ids[last - 1] not in ends and not tokenizer.decode(ids[last - 1:last]).strip():
            last -= 1
        if ids[last - 1] in ends:
            ids, labels = ids[:last], labels[:last]
            labels[-1] = ids[-1]
            return ids, labels
    if not ids or ids[-1] != eos_id:
        return ids + [eos_id], labels + [eos_id]
    return ids, labels[:-1] + [eos_id]


def encode_all(records: list[dict], fmt: str, tokenizer, *, max_length: int, overlong: str = "error",
               answer_only: bool = False, qa_template: str = DEFAULT_QA_TEMPLATE,
               where: str = "data") -> tuple[list[Example], dict]:
    """Encode records; texts over `max_length` tokens are counted, then refused/dropped/cut.

    Returns the examples and a report `{examples, tokens, learned_tokens, overlong, longest,
    unknown_tokens}` (unknown tokens: the tokenizer's `<unk>`, a sign of a wrong tokenizer).
    """
    examples = [encode(r, fmt, tokenizer, answer_only=answer_only, qa_template=qa_template, where=where)
                for r in records]
    too_long = [i for i, ex in enumerate(examples) if len(ex.input_ids) > max_length]
    longest = max((len(ex.input_ids) for ex in examples), default=0)
    if too_long and overlong == "error":
        raise UserError(f"{where}: {len(too_long)} of {len(examples)} examples are longer than max_length="
                        f"{max_length} tokens (longest {longest}, first at record {too_long[0] + 1}); raise "
                        "data.max_length or set data.overlong=truncate|drop")
    if overlong == "drop":
        drop = set(too_long)
        examples = [ex for i, ex in enumerate(examples) if i not in drop]
    elif overlong == "truncate":
        examples = [Example(ex.input_ids[:max_length], ex.labels[:max_length]) for ex in examples]
    if not examples:
        raise UserError(f"{where}: no training examples left (after dropping {len(too_long)} over-long ones)")
    report = {
        "examples": len(examples),
        "tokens": sum(len(ex.input_ids) for ex in examples),
        "learned_tokens": sum(sum(1 for t in ex.labels if t != IGNORE) for ex in examples),
        "overlong": len(too_long),
        "overlong_policy": overlong,
        "longest": longest,
        "unknown_tokens": sum(ex.input_ids.count(tokenizer.unk_token_id) for ex in examples)
        if tokenizer.unk_token_id is not None else 0,
    }
    return examples, report


def pack(examples: list[Example], max_length: int) -> list[dict]:
    """Greedy first-fit packing of whole examples into rows of at most `max_length` tokens.

    Each row carries `position_ids` that restart at 0 for every example; with no attention
    mask, transformers builds a block-diagonal causal mask from them, so packed examples do
    not attend to each other. Examples are never split, and the first token of each example
    is not a target (alone it never is; packed it would teach "EOS is followed by BOS").
    """
    rows: list[dict] = []
    for ex in sorted(examples, key=lambda e: -len(e.input_ids)):
        n = len(ex.input_ids)
        for row in rows:
            if len(row["input_ids"]) + n <= max_length:
                break
        else:
            row = {"input_ids": [], "labels": [], "position_ids": []}
            rows.append(row)
        row["input_ids"] += ex.input_ids
        row["labels"] += [IGNORE] + ex.labels[1:]
        row["position_ids"] += list(range(n))
    return rows


class Collator:
    """Pads a batch: `input_ids` with the pad id, `labels` with IGNORE.

    Unpacked rows get an attention mask; packed rows get position ids instead (the padding
    tail is a separate sequence starting at position 0, and its labels are ignored). It counts
    the tokens it was given and those it returned with padding: what a batch layout costs
    (`train --json` reports them as `tokens`).
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id
        self.real_tokens = self.padded_tokens = 0

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        self.real_tokens += sum(len(r["input_ids"]) for r in rows)
        self.padded_tokens += width * len(rows)
        batch = {
            "input_ids": torch.tensor([r["input_ids"] + [self.pad_id] * (width - len(r["input_ids"])) for r in rows]),
            "labels": torch.tensor([r["labels"] + [IGNORE] * (width - len(r["labels"])) for r in rows]),
        }
        if "position_ids" in rows[0]:
            batch["position_ids"] = torch.tensor(
                [r["position_ids"] + list(range(width - len(r["position_ids"]))) for r in rows])
        else:
            batch["attention_mask"] = torch.tensor(
                [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
        return batch
