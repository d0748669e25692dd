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


def embedding_tensors(checkpoint) -> dict[str, str]:
    """role -> tensor name for the checkpoint's input embeddings and output head (if present)."""
    found: dict[str, str] = {}
    for name in checkpoint.names:
        role = embedding_role(name, checkpoint.tensors[name].shape, checkpoint.vocab_size)
        if role and role not in found:
            found[role] = name
    return found


def head_is_tied(checkpoint) -> bool:
    """True when the model's output head is its input embedding matrix (`from_pretrained`
    then ignores any head tensor in the files). The config says so when it can; without the
    key, a checkpoint with embeddings but no head tensor is tied."""
    if checkpoint.tie_word_embeddings is not None:
        return checkpoint.tie_word_embeddings
    roles = embedding_tensors(checkpoint)
    return "input_embeddings" in roles and "output_head" not in roles
