"""Generation backends behind one interface (see `base.Backend`), and the factory that picks one."""

from __future__ import annotations

from typing import Any

from skillgraft.evaluate.backends.base import Backend, GenerationSettings, Prompt, as_messages, cut_at_stop

__all__ = ["Backend", "GenerationSettings", "Prompt", "as_messages", "cut_at_stop", "make_backend"]


def make_backend(model: Any, *, label: str | None = None, backend: str = "auto", tokenizer: Any = None,
                 endpoint_model: str | None = None, dtype: str | None = None, device: str | None = None,
                 timeout: float = 60.0, retries: int = 3) -> Backend:
    """A backend for `model`: a Backend (returned as is), a (model, tokenizer) pair, a loaded
    transformers model with `tokenizer=`, an `http(s)://…/v1` URL, or a checkpoint path."""
    from skillgraft.errors import UserError

    if isinstance(model, Backend):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        model, tokenizer = model
    if not isinstance(model, str):
        from skillgraft.evaluate.backends.hf import HFBackend

        if tokenizer is None:
            raise UserError("an in-memory model needs its tokenizer: pass (model, tokenizer)")
        return HFBackend(model, tokenizer, label or type(model).__name__)
    from skillgraft.evaluate.backends.endpoint import EndpointBackend, is_endpoint

    if backend not in ("auto", "transformers", "endpoint", "vllm"):
        raise UserError(f"--backend {backend}: choose auto, transformers, endpoint or vllm")
    if backend == "endpoint" or (backend == "auto" and is_endpoint(model)):
        if not is_endpoint(model):
            raise UserError(f"model {model}: the endpoint backend needs an http(s)://…/v1 URL")
        return EndpointBackend(model, model=endpoint_model, label=label, timeout=timeout, retries=retries)
    if backend == "vllm":
        from skillgraft.evaluate.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model, label=label, dtype=dtype)
    from skillgraft.evaluate.backends.hf import HFBackend

    return HFBackend.from_path(model, label=label, dtype=dtype, device=device)
