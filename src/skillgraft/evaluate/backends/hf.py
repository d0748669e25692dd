"""The transformers backend: batched greedy/sampled generation and batched log-likelihood.

Batches are left-padded with an attention mask and explicit position ids, so a prompt's
greedy output is the same whatever batch it lands in (prompts are sorted by length to keep
padding small). Works on a checkpoint folder or on a model object already in memory (the
training monitor evaluates the model it is training).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillgraft.errors import UserError
from skillgraft.evaluate.backends.base import Backend, GenerationSettings, Prompt, cut_at_stop

from skillgraft.tokenizer import END_OF_TURN


@dataclass
class Generated:
    """One generation as tokens: the prompt's ids, the new ids (with the end token that stopped
    it, if any), the decoded answer (stop strings cut) and whether an end token ended it."""

    prompt_ids: list[int]
    answer_ids: list[int]
    text: str
    ended: bool


def chosen_dtype(folder: Path, requested: str | None, *, on_cpu: bool) -> str | None:
    """The dtype to load `folder` in (None: its own), by `cpu.compute_dtype`; a change is
    reported (a bfloat16 checkpoint evaluated in float32 on a CPU without fast bf16)."""
    from skillgraft import cpu

    cpu.ensure_threads()
    stored = cpu.stored_dtype(folder)
    dtype, why = cpu.compute_dtype(stored, requested, on_cpu)
    log = cpu.notes()
    if log is not None and dtype and dtype != stored and not requested:
        log(f"compute dtype: {dtype} for {folder.name} ({why})")
    return dtype


def load_pretrained(path: str, *, dtype: str | None = None, device: str | None = None):
    """Load model + tokenizer from a folder, a Hugging Face id or `lab:NAME` (resolved once,
    then loaded from the local folder only); a vector folder is refused."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skillgraft.checkpoint.kinds import local_model

    folder = local_model(path).path
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise UserError(f"model {path}: {folder} has no config.json (not a Hugging Face checkpoint folder)")
    path = str(folder)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype and not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise UserError(f"--dtype {dtype}: not a torch dtype (float32, bfloat16, float16)")
    dtype = chosen_dtype(folder, dtype, on_cpu=device is None or str(device).startswith("cpu"))
    if dtype:
        kwargs["dtype"] = getattr(torch, dtype)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model is noise in eval's output
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise UserError(f"model {path}: cannot load ({str(exc).splitlines()[0]})") from None
    if device:
        model = model.to(device)
    model.eval()
    return model, tokenizer


@contextmanager
def eval_mode(model):
    """Eval mode (no dropout) for the block, then the caller's mode back (the training monitor)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _strip_tail(row: list[int], pad_id: int) -> list[int]:
    """A row a stop string ended is padded after it (transformers fills finished rows)."""
    end = len(row)
    while end and row[end - 1] == pad_id:
        end -= 1
    return row[:end]


class HFBackend(Backend):
    """A `transformers` causal LM + tokenizer, loaded or given."""

    kind = "transformers"

    def __init__(self, model, tokenizer, label: str = "model", source: str | None = None):
        super().__init__(label)
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self.pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)

    @classmethod
    def from_path(cls, path: str, *, label: str | None = None, dtype: str | None = None,
                  device: str | None = None) -> "HFBackend":
        model, tokenizer = load_pretrained(path, dtype=dtype, device=device)
        return cls(model, tokenizer, label or path, source=path)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    # ---- prompts -> token ids -------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """The exact text the model sees: raw prompts as is, messages through the chat template."""
        if isinstance(prompt, str):
            return prompt
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(f"model {self.label}: chat-format prompt (messages) but the tokenizer has no "
                            "chat template; use raw `prompt` items or a model with a template")
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def encode(self, prompt: Prompt, suffix: str = "") -> list[int]:
        """Token ids; special tokens (BOS) are added to raw prompts only, since chat templates
        write their own."""
        text = self.render(prompt) + suffix
        return list(self.tokenizer(text, add_special_tokens=isinstance(prompt, str))["input_ids"])

    def _left_pad(self, rows: list[list[int]]):
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                ids[i, width - len(row):] = torch.tensor(row)
                mask[i, width - len(row):] = 1
        device = next(self.model.parameters()).device
        return ids.to(device), mask.to(device)

    def _eos_ids(self, settings: GenerationSettings, chat: bool) -> list[int]:
        ids: list[int] = []
        config_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for value in (config_eos, self.tokenizer.eos_token_id, settings.stop_token_ids):
            if value is None:
                continue
            ids.extend(value if isinstance(value, (list, tuple)) else [value])
        if chat:
            vocab = self.tokenizer.get_vocab()
            ids.extend(vocab[t] for t in END_OF_TURN if t in vocab)
        return sorted(set(ids))

    # ---- generation -------------------------------------------------------------------
    def generate(self, prompts: list[Prompt], settings: GenerationSettings, batch_size: int = 8) -> list[str]:
        return [text for text, _ in self.generate_ended(prompts, settings, batch_size)]

    def generate_ended(self, prompts: list[Prompt], settings: GenerationSettings,
                       batch_size: int = 8) -> list[tuple[str, bool]]:
        """`generate`, with whether each output ended on an end token (EOS, a stop token id, or a
        chat template's end of turn) rather than at `max_new_tokens` or a stop string: the end
        token is removed from the text, and a metric that scores "answer, then stop" needs it."""
        return [(row.text, row.ended) for row in self.generate_tokens(prompts, settings, batch_size)]

    def generate_tokens(self, prompts: list[Prompt], settings: GenerationSettings,
                        batch_size: int = 8) -> list["Generated"]:
        """Each prompt's ids, the generated ids (up to and including the end token, when one
        ended it) and the decoded answer: what a reference answer (`evaluate.reference`) keeps
        so its log-probabilities can be compared with another model's on the very same tokens."""
        import torch
        from transformers import GenerationConfig

        encoded = [self.encode(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
        outputs: list[Generated] = [None] * len(prompts)  # type: ignore[list-item]
        device = next(self.model.parameters()).device
        # sampling seeds torch per batch; fork_rng keeps a caller's RNG stream (a training run) intact
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), eval_mode(self.model):
            for batch_no, start in enumerate(range(0, len(order), batch_size)):
                index = order[start : start + batch_size]
                chat = any(not isinstance(prompts[i], str) for i in index)
                ids, mask = self._left_pad([encoded[i] for i in index])
                kwargs: dict[str, Any] = dict(
                    max_new_tokens=settings.max_new_tokens, do_sample=settings.do_sample,
                    eos_token_id=self._eos_ids(settings, chat), pad_token_id=self.pad_id, use_cache=True,
                )
                if settings.do_sample:
                    torch.manual_seed(settings.seed + batch_no)
                    kwargs.update(temperature=settings.temperature, top_p=settings.top_p,
                                  top_k=settings.top_k or 0)
                else:
                    kwargs.update(temperature=None, top_p=None, top_k=None)
                # a fresh GenerationConfig: a checkpoint's own defaults (repetition_penalty,
                # sampling temperature...) must not make "the same decoding" differ per model
                extra = {"stopping_criteria": self._stop_criteria(settings.stop, ids.shape[1])} if settings.stop else {}
                with torch.no_grad():
                    out = self.model.generate(input_ids=ids, attention_mask=mask,
                                              generation_config=GenerationConfig(**kwargs), **extra)
                new = out[:, ids.shape[1]:].tolist()
                stops = set(kwargs["eos_token_id"])
                for row, i in zip(new, index):
                    stopped = next((k for k, t in enumerate(row) if t in stops), None)
                    text = self.tokenizer.decode(row[:stopped], skip_special_tokens=True)
                    if stopped is None:  # cut at max_new_tokens, maybe inside a multi-byte character
                        text = text.rstrip("\ufffd")
                    answer = row[:stopped + 1] if stopped is not None else _strip_tail(row, self.pad_id)
                    outputs[i] = Generated(encoded[i], answer, cut_at_stop(text, settings.stop).strip(),
                                           stopped is not None)
        return outputs

    def _stop_criteria(self, stop: list[str], prompt_width: int):
        """Stop a row once its decoded tail holds a stop string.

        transformers' own `stop_strings` assumes a BPE/SentencePiece vocabulary and fails on
        word-level ones; decoding a short tail works for any tokenizer. Outputs are cut at
        the stop string afterwards either way, so this only saves time.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        tokenizer = self.tokenizer
        tail = max(len(s) for s in stop) + 4

        class _StopStrings(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                done = [any(s in tokenizer.decode(row[prompt_width:][-tail:], skip_special_tokens=True) for s in stop)
                        for row in input_ids.tolist()]
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        return StoppingCriteriaList([_StopStrings()])

    # ---- log-likelihood ---------------------------------------------------------------
    def continuation_ids(self, context: Prompt, choice: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids), split where the context's own encoding ends."""
        ctx = self.encode(context)
        whole = self.encode(context, suffix=choice)
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            return ctx, whole[len(ctx):]
        cont = list(self.tokenizer(choice, add_special_tokens=False)["input_ids"])
        if not cont:
            raise UserError(f"model {self.label}: choice {choice!r} encodes to no tokens")
        return ctx, cont

    def _delimited(self, context: Prompt, choice: str) -> str:
        """The choice as it continues the context: after one space unless either side has it."""
        rendered = self.render(context)
        return choice if not rendered or rendered[-1].isspace() or choice[:1].isspace() else " " + choice

    def loglik(self, contexts: list[Prompt], choices: list[list[str]], settings: GenerationSettings,
               batch_size: int = 8) -> list[list[float]]:
        """All choices of `batch_size` items go through the model in one forward pass."""
        import torch

        results: list[list[float]] = []
        for start in range(0, len(contexts), batch_size):
            pairs = [self.continuation_ids(ctx, self._delimited(ctx, c))
                     for ctx, cs in zip(contexts[start:start + batch_size], choices[start:start + batch_size])
                     for c in cs]
            scores = [float(logprobs.gather(-1, torch.tensor(cont, device=logprobs.device)[:, None]).sum())
                      for (_, cont), logprobs in zip(pairs, self.answer_logprobs(pairs, batch_size=len(pairs)))]
            k = 0
            for cs in choices[start:start + batch_size]:
                results.append(scores[k : k + len(cs)])
                k += len(cs)
        return results

    def answer_logprobs(self, rows: list[tuple[list[int], list[int]]], batch_size: int = 8):
        """Yield, per (prompt ids, answer ids) row in order, the model's log-probabilities over the
        vocabulary at each answer position (a float32 tensor [len(answer), vocab]): the
        next-token distributions `general_kl` compares and `loglik` sums. Left-padded, with
        position ids, so a row's numbers do not depend on the batch it lands in."""
        import torch

        with eval_mode(self.model):
            for start in range(0, len(rows), batch_size):
                batch = rows[start:start + batch_size]
                ids, mask = self._left_pad([p + a for p, a in batch])
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                keep = max(len(a) for _, a in batch) + 1
                with torch.no_grad():
                    logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                        logits_to_keep=keep).logits.float()
                logprobs = torch.log_softmax(logits, dim=-1)
                for row, (_, answer) in enumerate(batch):
                    n = len(answer)
                    # the token at absolute t is predicted at t-1; the answer is the last n tokens
                    yield logprobs[row, keep - 1 - n : keep - 1]

    def describe(self) -> dict[str, Any]:
        import hashlib

        template = getattr(self.tokenizer, "chat_template", None) or ""
        config = getattr(self.model, "config", None)
        return {
            "backend": self.kind,
            "label": self.label,
            "source": self.source,
            "architecture": (getattr(config, "architectures", None) or [type(self.model).__name__])[0],
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
        }

    def close(self) -> None:
        self.model = None
