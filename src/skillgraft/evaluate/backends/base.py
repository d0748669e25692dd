"""The generation backend interface and the decoding settings every backend honours.

A backend turns prompts (raw strings or chat message lists) into output strings, and
optionally scores continuations by log-likelihood. Keeping the interface this small is
what lets the same suite run on a local checkpoint, an HTTP server or vLLM.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from skillgraft.errors import UserError

Prompt = Union[str, list[dict[str, str]]]


class GenerationSettings(BaseModel):
    """Decoding settings (a suite's `generation:` block); recorded in every results file."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(64, ge=1)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    seed: int = 0
    stop: list[str] = Field(default_factory=list)
    stop_token_ids: list[int] = Field(default_factory=list)
    # render raw prompts as one user message with the chat template; "auto": when the model
    # has one (the default of suite files and `eval`/`compare`, resolved per model by
    # `Backend.applied`, since a chat model asked raw `Q: … A:` prompts is not measured as used)
    chat: Union[bool, Literal["auto"]] = False
    system: str | None = None  # system message added to chat prompts


def as_messages(prompt: Prompt, settings: GenerationSettings) -> Prompt:
    """Apply `chat`/`system`: a raw prompt becomes a user message when `chat` is set
    (`chat: auto` must first be resolved for a model: `Backend.applied`)."""
    if settings.chat == "auto":
        raise ValueError("chat: auto is resolved per model (Backend.applied) before prompts are built")
    if isinstance(prompt, str) and not settings.chat:
        return prompt
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if settings.system and not (messages and messages[0].get("role") == "system"):
        messages = [{"role": "system", "content": settings.system}, *messages]
    return messages


def cut_at_stop(text: str, stop: list[str]) -> str:
    """Truncate at the earliest stop string (the stop string itself is removed)."""
    cut = len(text)
    for s in stop:
        if s:
            at = text.find(s)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


class Backend(ABC):
    """One model behind one generation interface."""

    kind = "abstract"

    def __init__(self, label: str):
        self.label = label

    @abstractmethod
    def generate(self, prompts: list[Prompt], settings: GenerationSettings, batch_size: int = 8) -> list[str]:
        """One output string per prompt, in order; outputs must not depend on batch_size for greedy."""

    def loglik(self, contexts: list[Prompt], choices: list[list[str]], settings: GenerationSettings,
               batch_size: int = 8) -> list[list[float]]:
        """Summed log-probability of each choice continuing its context."""
        raise UserError(f"{self.label}: the {self.kind} backend cannot score choices by log-likelihood "
                        "(choice_loglik needs a local model); use choice_generated instead")

    @property
    def has_chat_template(self) -> bool:
        """Whether `chat: auto` means the chat template for this model (endpoints: no, since a
        server's template cannot be seen; pass --chat to use /chat/completions)."""
        return False

    def applied(self, settings: GenerationSettings) -> GenerationSettings:
        """`settings` with `chat: auto` resolved for this model."""
        if settings.chat != "auto":
            return settings
        return settings.model_copy(update={"chat": self.has_chat_template})

    def describe(self) -> dict[str, Any]:
        """What to record about this model in the results settings."""
        return {"backend": self.kind, "label": self.label}

    def close(self) -> None:
        """Release the model (memory); the default does nothing."""
