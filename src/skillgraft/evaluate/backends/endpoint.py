"""An OpenAI-compatible HTTP endpoint (vLLM, llama.cpp, TGI... serving `/v1`).

Raw prompts go to `/v1/completions`, chat messages to `/v1/chat/completions`. Requests run
`batch_size` at a time in threads; connection errors, timeouts, 429 and 5xx are retried with
backoff, then reported as one `UserError` naming the URL.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from skillgraft.errors import UserError
from skillgraft.evaluate.backends.base import Backend, GenerationSettings, Prompt, cut_at_stop


def is_endpoint(model: str) -> bool:
    """A MODEL argument naming an HTTP base URL selects this backend."""
    return model.startswith(("http://", "https://"))


class EndpointBackend(Backend):
    """Generation through an OpenAI-compatible server."""

    kind = "endpoint"

    def __init__(self, base_url: str, *, model: str | None = None, label: str | None = None,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 0.5, api_key: str | None = None):
        super().__init__(label or base_url)
        import requests

        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.model = model or self._first_model()

    def _request(self, method: str, path: str, payload: dict | None = None) -> dict[str, Any]:
        import requests

        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.retries + 1):
            try:
                response = self.session.request(method, url, json=payload, timeout=self.timeout)
            except requests.Timeout:
                last = f"no answer within {self.timeout:g}s"
            except requests.ConnectionError as exc:
                last = f"connection failed ({type(exc).__name__})"
            else:
                if response.status_code == 429 or response.status_code >= 500:
                    last = f"HTTP {response.status_code}"
                elif response.status_code >= 400:
                    raise UserError(f"endpoint {url}: HTTP {response.status_code}: {response.text[:200].strip()}")
                else:
                    try:
                        return response.json()
                    except ValueError:
                        raise UserError(f"endpoint {url}: answer is not JSON") from None
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise UserError(f"endpoint {url}: {last} after {self.retries + 1} attempts")

    def _first_model(self) -> str:
        listing = self._request("GET", "/models")
        data = listing.get("data") or []
        if not data or "id" not in data[0]:
            raise UserError(f"endpoint {self.base_url}/models lists no model; pass --endpoint-model NAME")
        return data[0]["id"]

    def complete_one(self, prompt: Prompt, settings: GenerationSettings) -> str:
        """One request; greedy means temperature 0."""
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature if settings.do_sample else 0.0,
            "top_p": settings.top_p if settings.do_sample else 1.0,
            "seed": settings.seed,
        }
        if settings.stop:
            payload["stop"] = list(settings.stop)
        if isinstance(prompt, str):
            payload["prompt"] = prompt
            answer = self._request("POST", "/completions", payload)
            text = _first_choice(answer, self.base_url).get("text")
        else:
            payload["messages"] = prompt
            answer = self._request("POST", "/chat/completions", payload)
            text = (_first_choice(answer, self.base_url).get("message") or {}).get("content")
        if not isinstance(text, str):
            raise UserError(f"endpoint {self.base_url}: answer has no generated text")
        return cut_at_stop(text, settings.stop).strip()

    def generate(self, prompts: list[Prompt], settings: GenerationSettings, batch_size: int = 8) -> list[str]:
        with ThreadPoolExecutor(max_workers=max(1, batch_size)) as pool:
            return list(pool.map(lambda p: self.complete_one(p, settings), prompts))

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "label": self.label, "base_url": self.base_url, "served_model": self.model}

    def close(self) -> None:
        self.session.close()


def _first_choice(answer: dict, base_url: str) -> dict:
    choices = answer.get("choices")
    if not choices or not isinstance(choices[0], dict):
        raise UserError(f"endpoint {base_url}: answer has no choices")
    return choices[0]
