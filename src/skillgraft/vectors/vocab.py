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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from skillgraft.errors import UserError

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

    def full_delta(self, source, name: str) -> torch.Tensor:
        """The delta in the target's row order: shared rows filled, every other row zero."""
        shape = self.shapes[name]
        if source.vector is not None:
            rows = source.vector.read(name).float()
            src_limit, base_limit = rows.shape[0], None
        else:
            skilled, base = source.skilled.read(name).float(), source.base.read(name)
            src_limit, base_limit = skilled.shape[0], base.shape[0]
        keep = (self.target_ids < shape[0]) & (self.source_ids < src_limit)
        if base_limit is not None:
            keep &= self.base_ids < base_limit
        out = torch.zeros(shape, dtype=torch.float32)
        target_ids, source_ids = self.target_ids[keep], self.source_ids[keep]
        if source.vector is not None:
            out[target_ids] = rows[source_ids]
        else:
            out[target_ids] = skilled[source_ids].sub_(base[self.base_ids[keep]])
        return out


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


def copy_special_rows(total: torch.Tensor, original: torch.Tensor, chat: torch.Tensor, scale: float,
                      special: list[tuple[str, int, int]]) -> list[str]:
    """Give untrained special-token rows the chat model's rows (see the module doc); in place."""
    if total.dim() != 2 or not special:
        return []
    norms = original.float().norm(dim=1)
    threshold = UNTRAINED * float(norms.median())
    copied = []
    for token, target_id, chat_id in special:
        if target_id >= total.shape[0] or chat_id >= chat.shape[0] or float(norms[target_id]) >= threshold:
            continue
        row = chat[chat_id].float()
        total[target_id] = row if scale == 1.0 else original[target_id].float() * (1 - scale) + row * scale
        copied.append(token)
    return copied
