"""vLLM in-process (optional extra): fast generation when vLLM is installed and a GPU is present.

Only imported when asked for (`--backend vllm`); absent vLLM or GPU is a `UserError`, and the
tests skip. Greedy decoding maps to temperature 0.
"""

from __future__ import annotations

from typing import Any

from skillgraft.errors import UserError
from skillgraft.evaluate.backends.base import Backend, GenerationSettings, Prompt, cut_at_stop


def vllm_available() -> bool:
    """True when vLLM imports and torch sees a CUDA device."""
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


class VLLMBackend(Backend):
    """A `vllm.LLM` over a local checkpoint folder."""

    kind = "vllm"

    def __init__(self, path: str, *, label: str | None = None, dtype: str | None = None):
        super().__init__(label or path)
        if not vllm_available():
            raise UserError("--backend vllm needs the `vllm` package and a CUDA GPU; neither is usable here")
        from vllm import LLM

        self.path = path
        self.llm = LLM(model=path, dtype=dtype or "auto", trust_remote_code=False)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.llm.get_tokenizer(), "chat_template", None))

    def _params(self, settings: GenerationSettings):
        from vllm import SamplingParams

        return SamplingParams(
            max_tokens=settings.max_new_tokens,
            temperature=settings.temperature if settings.do_sample else 0.0,
            top_p=settings.top_p if settings.do_sample else 1.0,
            top_k=(settings.top_k or -1) if settings.do_sample else -1,
            seed=settings.seed,
            stop=list(settings.stop) or None,
            stop_token_ids=list(settings.stop_token_ids) or None,
        )

    def generate(self, prompts: list[Prompt], settings: GenerationSettings, batch_size: int = 8) -> list[str]:
        params = self._params(settings)
        outputs: list[str] = [""] * len(prompts)
        raw = [i for i, p in enumerate(prompts) if isinstance(p, str)]
        chat = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        if raw:
            for i, result in zip(raw, self.llm.generate([prompts[i] for i in raw], params, use_tqdm=False)):
                outputs[i] = cut_at_stop(result.outputs[0].text, settings.stop).strip()
        if chat:
            for i, result in zip(chat, self.llm.chat([prompts[i] for i in chat], params, use_tqdm=False)):
                outputs[i] = cut_at_stop(result.outputs[0].text, settings.stop).strip()
        return outputs

    def describe(self) -> dict[str, Any]:
        import vllm

        return {"backend": self.kind, "label": self.label, "source": self.path, "vllm_version": vllm.__version__}
