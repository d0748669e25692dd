"""Reference answers: what a model said before a change, computed once and cached on disk.

`kept` (of the items the reference answered correctly, the share a candidate still answers
correctly) and `general_kl` (mean per-token KL(reference ‖ candidate) on the reference's own
greedy answers) compare a candidate with the reference's answers to the same prompts;
training's replay and KL regulariser train on them. All four need the same thing: the
reference's greedy answer to each prompt, as tokens, with the reference's next-token
distribution at every answer position (its top `TOP_K` log-probabilities: enough to compare
distributions, small enough to cache).

Generating them is the expensive part, so they are cached under
`$SKILLGRAFT_CACHE/reference/` (default `~/.cache/skillgraft/reference/`), keyed by a hash of
the reference model's files (weights, config, tokenizer, chat template), the prompts and the
decoding settings: a second evaluation against the same reference generates nothing. A
model held only in memory (the training monitor's step-0 model) is not cached.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from skillgraft.errors import UserError

TOP_K = 32
FORMAT = 1  # bump when the cached record changes shape

_fingerprints: dict[tuple[str, int, int], str] = {}


@dataclass
class ReferenceAnswer:
    """One prompt's reference answer: ids, text, and the top-k next-token log-probabilities at
    each answer position (`topk_ids[t]`, `topk_logprobs[t]` predict `answer_ids[t]`)."""

    prompt_ids: list[int]
    answer_ids: list[int]
    text: str
    ended: bool
    topk_ids: list[list[int]]
    topk_logprobs: list[list[float]]


def cache_dir() -> Path:
    root = os.environ.get("SKILLGRAFT_CACHE") or Path.home() / ".cache" / "skillgraft"
    return Path(root) / "reference"


def model_fingerprint(folder: str | Path) -> str:
    """sha256 over every file of a model folder that changes what it answers (weights, config,
    tokenizer, chat template: everything but `skillgraft.json` and `README.md`), by content.
    Memoised per process by path, size and mtime, so one run hashes a folder once."""
    from skillgraft.checkpoint.folder import sha256_file

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in ("skillgraft.json", "README.md")
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if memo not in _fingerprints:
            _fingerprints[memo] = sha256_file(path)
        digest.update(f"{path.relative_to(folder).as_posix()}\0{_fingerprints[memo]}\n".encode())
    return digest.hexdigest()


def cache_key(fingerprint: str, prompts: list, settings: dict[str, Any], top_k: int) -> str:
    blob = json.dumps([FORMAT, fingerprint, prompts, settings, top_k], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _read(path: Path, count: int) -> list[ReferenceAnswer] | None:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        answers = [ReferenceAnswer(**row) for row in rows]
    except (OSError, ValueError, TypeError):
        return None  # missing, cut or from another version: compute again
    return answers if len(answers) == count else None


def compute(backend, prompts: list, settings, *, batch_size: int = 8, top_k: int = TOP_K) -> list[ReferenceAnswer]:
    """Generate `backend`'s answers (an `HFBackend`) and read its distributions on them."""
    import torch

    generated = backend.generate_tokens(prompts, settings, batch_size=batch_size)
    rows = [(g.prompt_ids, g.answer_ids) for g in generated]
    out = []
    for g, logprobs in zip(generated, backend.answer_logprobs(rows, batch_size=batch_size)):
        k = min(top_k, logprobs.shape[-1]) if logprobs.numel() else 0
        top = torch.topk(logprobs, k, dim=-1) if k else None
        out.append(ReferenceAnswer(g.prompt_ids, g.answer_ids, g.text, g.ended,
                                   top.indices.tolist() if top is not None else [],
                                   top.values.tolist() if top is not None else []))
    return out


def reference_answers(prompts: list, settings, *, fingerprint: str | None, load: Callable[[], Any],
                      batch_size: int = 8, top_k: int = TOP_K, log: Callable[[str], None] | None = None
                      ) -> list[ReferenceAnswer]:
    """The reference's answers to `prompts` under `settings` (a `GenerationSettings`), from the
    cache when `fingerprint` (the model's `model_fingerprint`) names one already computed;
    `load()` gives the reference backend, and is called only on a cache miss."""
    path = None
    if fingerprint is not None:
        path = cache_dir() / f"{cache_key(fingerprint, prompts, settings.model_dump(), top_k)}.json"
        cached = _read(path, len(prompts))
        if cached is not None:
            return cached
    backend = load()
    if not hasattr(backend, "generate_tokens"):
        raise UserError(f"reference model {backend.label}: reference answers need a local model "
                        "(transformers backend), not an endpoint")
    if log:
        log(f"reference answers: generating {len(prompts)} with {backend.label} (cached for next time)")
    answers = compute(backend, prompts, settings, batch_size=batch_size, top_k=top_k)
    if path is not None:
        from skillgraft.checkpoint.publish import write_file_atomic

        write_file_atomic(path, json.dumps([asdict(a) for a in answers]))
    return answers


def coarse_kl(topk_ids, topk_logprobs, candidate_logprobs):
    """Per-position KL(reference ‖ candidate) over the reference's top-k tokens plus one bucket
    for the rest of the vocabulary (the KL of the two distributions coarsened to k+1 outcomes:
    a lower bound of the full KL, equal to it when the top k hold all the mass).

    `topk_ids`/`topk_logprobs`: [n, k] tensors; `candidate_logprobs`: [n, vocab] log-softmax of
    the candidate (differentiable: the training regulariser uses this too). Returns [n]."""
    import torch

    p = topk_logprobs.exp()
    q_log = candidate_logprobs.gather(-1, topk_ids)
    top = (p * (topk_logprobs - q_log)).sum(-1)
    p_rest = (1 - p.sum(-1)).clamp(min=0)
    q_rest = (1 - q_log.exp().sum(-1)).clamp(min=1e-12)
    rest = torch.where(p_rest > 1e-12, p_rest * (p_rest.clamp(min=1e-12).log() - q_rest.log()),
                       torch.zeros_like(p_rest))
    return top + rest


def kl_to(backend, answers: list[ReferenceAnswer], batch_size: int = 8) -> list[float | None]:
    """Mean per-token `coarse_kl` of each reference answer under `backend` (an `HFBackend`);
    None where the answer is empty."""
    import torch

    # longest first, so a batch holds rows of similar length (less padding to compute); the
    # numbers do not depend on the batch (left padding with position ids)
    order = sorted(range(len(answers)), key=lambda i: (-len(answers[i].prompt_ids) - len(answers[i].answer_ids), i))
    rows = [(answers[i].prompt_ids, answers[i].answer_ids) for i in order]
    out: list[float | None] = [None] * len(answers)
    for index, logprobs in zip(order, backend.answer_logprobs(rows, batch_size=batch_size)):
        answer = answers[index]
        if answer.answer_ids:
            kl = coarse_kl(torch.tensor(answer.topk_ids), torch.tensor(answer.topk_logprobs), logprobs)
            out[index] = float(kl.clamp(min=0).mean())
    return out
