"""`data show`: the first examples exactly as training will see them, tokens and loss mask.

Uses the same reader and encoder as `train`, so the chat template, BOS/EOS and the answer
mask shown here are the ones trained on.
"""

from __future__ import annotations

from skillgraft.data.encode import IGNORE, encode_all
from skillgraft.data.records import check_format, read_records
from skillgraft.errors import UserError


def show_examples(config, n: int = 3) -> dict:
    """`{format, answer_only, bos, eos, report, examples: [{tokens, ids, learned}]}`."""
    from skillgraft.train.dataset import load_tokenizer

    if n < 1:
        raise UserError("-n must be at least 1")
    tokenizer = load_tokenizer(config.model)
    data = config.data
    records = read_records(data.train, "data.train")
    if not records:
        raise UserError(f"data.train: {data.train} holds no examples")
    check_format(records, data.format, data.train)
    # Over-long texts are counted, not refused, here: showing is how a user finds them.
    examples, report = encode_all(records, data.format, tokenizer, max_length=data.max_length, overlong="truncate",
                                  answer_only=data.answer_only, qa_template=data.qa_template,
                                  where=f"data.train {data.train}")
    shown = []
    for ex in examples[:n]:
        shown.append({"tokens": tokenizer.convert_ids_to_tokens(ex.input_ids), "ids": ex.input_ids,
                      "learned": [label != IGNORE for label in ex.labels]})
    return {"format": data.format, "answer_only": data.answer_only, "bos": tokenizer.bos_token,
            "eos": tokenizer.eos_token, "report": report, "examples": shown}
