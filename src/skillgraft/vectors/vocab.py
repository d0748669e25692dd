"""Vocabulary-aware grafting of the input embeddings and output head (`--with-embeddings` across vocabularies).

A continually pretrained target often extended or renumbered its vocabulary, so row i of
its embedding is not row i of the vector's. Rows are matched by token string instead:

- a token both vocabularies hold gets the vector's delta row (moved to the target's id);
- a token only the target holds keeps its row untouched;
- a token only the vector holds is dropped (counted).

Special chat tokens need more: a chat-template token (e.g. `<|im_end|>`, `<|eot_id|>`) that
the target holds but never trained has a near-empty row, and adding a delta to it does not
make it work. When the chat model itself is at hand (`--delta BASE CHAT`), such rows become
the *chat model's* rows, interpolated by the vector's scale:
`row = (1 − scale)·target_row + scale·chat_row` (a plain copy at scale 1). The official Chat
Vector code copies these rows from the base model by mistake; here they come from the chat
model. A row counts as untrained when its norm is under `UNTRAINED` × the median row norm.

The delta is computed a block of target rows at a time, reading only the vector's rows those
rows need; the untrained-row test reads the target's rows once more, block by block, for
their norms. Neither holds the embedding or head whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from skillgraft.errors import UserError
from skillgraft.vectors.streaming import blocks

UNTRAINED = 0.1


def vocabulary(folder: Path, role: str) -> dict[str, int]:
    from skillgraft.tokenizer import backend_tokenizer

    tokenizer = backend_tokenizer(Path(folder))
    if tokenizer is None:
        raise UserError(f"the {role} {folder} has no tokenizer files to match embedding rows by token")
    return tokenizer.get_vocab(with_added_tokens=True)


def chat_tokens(chat_dir: Path) -> list[str]:
    """Special tokens the chat model's template emits, plus its stop tokens."""
    from skillgraft.tokenizer import backend_tokenizer, read_chat_template, stop_token_strings, tokens_needed_by_template

    template = read_chat_template(chat_dir)
    tokens = tokens_needed_by_template(template, chat_dir) if template else []
    for token in stop_token_strings(chat_dir, backend_tokenizer(chat_dir)):
        if token not in tokens:
            tokens.append(token)
    return tokens


@dataclass
class RowAlignment:
    """Target rows ← vector rows (and base rows, for a delta computed on the fly)."""

    target_ids: torch.Tensor
    source_ids: torch.Tensor
    base_ids: torch.Tensor | None
    counts: dict
    special: list[tuple[str, int, int]] = field(default_factory=list)  # (token, target id, chat id)
    missing_special: list[str] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # tensors mapped by rows -> target shape

    def report(self) -> dict:
        return {**self.counts, "special_candidates": [t for t, _, _ in self.special],
                "special_missing_in_target": self.missing_special, "tensors": sorted(self.shapes)}

    def part(self, source, name: str, scale: float, start: int, stop: int) -> tuple:
        """Entries [start, stop) (whole rows) of `source`'s delta in the target's row order, as a
        part for `arithmetic.combine_blockwise`: the stored rows moved to their target rows and
        zero rows elsewhere (whose delta is then exactly zero). Reads only the rows those
        target rows need; the float32 work stays in combine_blockwise's cache-sized chunks."""
        shape = self.shapes[name]
        width = math.prod(shape[1:])
        first, last = start // width, stop // width
        reference = source.vector if source.vector is not None else source.skilled
        keep = (self.target_ids >= first) & (self.target_ids < last)
        keep &= self.source_ids < reference.tensors[name].shape[0]
        if source.vector is None:
            keep &= self.base_ids < source.base.tensors[name].shape[0]
        targets = self.target_ids[keep] - first
        every_row = torch.equal(targets, torch.arange(last - first))  # then the rows read are in place

        def moved(checkpoint, ids: torch.Tensor) -> torch.Tensor:
            values = checkpoint.read_rows(name, ids)
            if every_row:
                return values.view(-1)
            out = torch.zeros((last - first, *shape[1:]), dtype=values.dtype)
            out[targets] = values
            return out.view(-1)

        if source.vector is not None:
            return moved(source.vector, self.source_ids[keep]), None, scale
        return moved(source.base, self.base_ids[keep]), moved(source.skilled, self.source_ids[keep]), scale


def align(reference_dir: Path, target_dir: Path, base_dir: Path | None = None, chat_dir: Path | None = None) -> RowAlignment:
    """Match rows by token string between the vector (or skilled model) and the target."""
    reference = vocabulary(reference_dir, "vector" if base_dir is None else "skilled model")
    target = vocabulary(target_dir, "target")
    base = vocabulary(base_dir, "base") if base_dir is not None else None
    shared = [token for token in target if token in reference and (base is None or token in base)]
    shared.sort(key=target.__getitem__)
    counts = {"shared": len(shared), "target_only": sum(t not in reference for t in target),
              "vector_only": sum(t not in target for t in reference)}
    alignment = RowAlignment(
        target_ids=torch.tensor([target[t] for t in shared], dtype=torch.long),
        source_ids=torch.tensor([reference[t] for t in shared], dtype=torch.long),
        base_ids=torch.tensor([base[t] for t in shared], dtype=torch.long) if base is not None else None,
        counts=counts)
    if chat_dir is not None:
        chat = vocabulary(chat_dir, "chat model")
        for token in chat_tokens(chat_dir):
            if token in target and token in chat:
                alignment.special.append((token, target[token], chat[token]))
            elif token in chat:
                alignment.missing_special.append(token)
    return alignment


def extract_alignment(base_dir: Path, skilled_dir: Path) -> RowAlignment:
    """Rows of `skilled − base` matched by token string, in the skilled model's numbering
    (`extract` when the two tokenizers differ): a token the base lacks gets a zero delta.
    The caller fills `shapes` with the embedding tensors to treat this way."""
    skilled = vocabulary(skilled_dir, "skilled model")
    base = vocabulary(base_dir, "base")
    shared = sorted((token for token in skilled if token in base), key=skilled.__getitem__)
    ids = torch.tensor([skilled[t] for t in shared], dtype=torch.long)
    return RowAlignment(target_ids=ids, source_ids=ids, base_ids=torch.tensor([base[t] for t in shared], dtype=torch.long),
                        counts={"shared": len(shared), "skilled_only": len(skilled) - len(shared),
                                "base_only": sum(t not in skilled for t in base)})


@dataclass
class ChatRows:
    """Untrained special-token rows of one tensor and the float32 rows that replace them."""

    width: int
    rows: dict[str, tuple[int, torch.Tensor]]  # token -> (target row, replacement)

    def patch(self, result: torch.Tensor, start: int, stop: int) -> bool:
        """Overwrite the rows that lie in entries [start, stop), of which `result` is the cast
        output; True when what was written is finite after the cast."""
        block = result.view(-1, self.width)
        finite = True
        for target_id, row in self.rows.values():
            if start <= target_id * self.width < stop:
                written = block[target_id - start // self.width]
                written.copy_(row)
                finite = finite and bool(torch.isfinite(written).all())
        return finite


def chat_rows(target, chat, name: str, scale: float, special: list[tuple[str, int, int]]) -> ChatRows:
    """Which special-token rows of the target's `name` are untrained, and the chat model's rows
    (interpolated by `scale`) that replace them; see the module doc. The threshold is a
    median over every row's norm, so the target's tensor is read once more, block by block."""
    shape = target.tensors[name].shape
    if len(shape) != 2 or not special:
        return ChatRows(1, {})
    norms = torch.empty(shape[0])  # filled in place (see `streaming` on small tensors kept across blocks)
    for start, stop in blocks(shape):
        rows = target.read_entries(name, start, stop).view(-1, shape[1])
        norms[start // shape[1]:stop // shape[1]] = rows.float().norm(dim=1)
    threshold = UNTRAINED * float(norms.median())
    replacements = {}
    for token, target_id, chat_id in special:
        if target_id >= shape[0] or chat_id >= chat.tensors[name].shape[0] or float(norms[target_id]) >= threshold:
            continue
        row = chat.read_rows(name, torch.tensor([chat_id]))[0].float()
        if scale != 1.0:
            row = target.read_rows(name, torch.tensor([target_id]))[0].float() * (1 - scale) + row * scale
        replacements[token] = (target_id, row)
    return ChatRows(shape[1], replacements)
