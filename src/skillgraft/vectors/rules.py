"""Which tensors a vector operation touches: include/exclude regexes and embedding roles.

The Chat Vector recipe leaves the target's input embeddings and output head alone, because
a continually pretrained model often extended its vocabulary. Those tensors are found by
role, not by one family's names: a 2-D tensor outside the numbered blocks whose first
dimension is the config's vocabulary size is an embedding (or, by its name, the head).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from skillgraft.errors import UserError

_LAYER_INDEX = re.compile(r"(^|\.)(\d+)(\.|$)")
_HEAD_NAME = re.compile(r"(lm_head|embed_out|output_layer|(^|\.)output\.weight$|head\.weight$)")
_EMBED_NAME = re.compile(r"(embed_tokens|wte|word_embeddings|tok_embeddings|embeddings?\.weight$|embed\.weight$)")


def _compile(patterns: list[str] | tuple[str, ...], option: str) -> list[re.Pattern]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise UserError(f"{option} {pattern!r} is not a valid regular expression ({exc})") from None
    return compiled


@dataclass
class TensorFilter:
    """Python regexes searched in tensor names; a name must match some include (if any) and
    no exclude: exclude wins."""

    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._include = _compile(self.include, "--include")
        self._exclude = _compile(self.exclude, "--exclude")

    def reason_to_skip(self, name: str) -> str | None:
        for pattern in self._exclude:
            if pattern.search(name):
                return f"excluded by --exclude {pattern.pattern!r}"
        if self._include and not any(p.search(name) for p in self._include):
            return "matches no --include"
        return None


def embedding_role(name: str, shape: tuple[int, ...], vocab_size: int | None) -> str | None:
    """'input_embeddings', 'output_head' or None for one tensor of a checkpoint."""
    if _LAYER_INDEX.search(name):
        return None
    if vocab_size is not None and len(shape) >= 1 and shape[0] == vocab_size and len(shape) <= 2:
        return "output_head" if _HEAD_NAME.search(name) else "input_embeddings"
    if vocab_size is None and len(shape) == 2:  # no vocab size in the config: fall back to names
        if _HEAD_NAME.search(name):
            return "output_head"
        if _EMBED_NAME.search(name):
            return "input_embeddings"
    return None
