"""Training that keeps what the model knew: self-distillation replay and a KL regulariser.

Fine-tuning on new facts or a persona teaches a small model to answer *everything* that way
("The capital of Japan is Kusas4Clean"). Both options here anchor the model to its own
behaviour before training, on general prompts that are not the user's data:

- `data.replay: {n, prompts}` mixes `n` of those prompts, answered by the model itself before
  training (greedy), into the training data, answer tokens learned;
- `regularize.kl: {weight, prompts, every, batch_size}` adds `weight · KL(reference ‖ model)`
  on the reference's answers to the loss every `every` steps. The reference is the model
  before training: with LoRA the same weights with the adapters switched off (exact KL over
  the vocabulary, no second copy in memory); with full fine-tuning the reference's top-k
  log-probabilities, computed once with its answers (`evaluate.reference.coarse_kl`).

The reference answers come from `evaluate.reference` (imported lazily: the training layer
does not need the evaluation layer unless these options are on), generated once per model
and prompt file and cached, so a second run generates nothing.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from skillgraft.errors import UserError

BUILTIN = {"general": Path(__file__).resolve().parent.parent / "evaluate" / "suites" / "general_prompts.jsonl"}
ANSWER_TOKENS = 96  # the KL reference's answers are cut here (replay: `data.replay.answer_tokens`)


def read_prompts(spec: str, key: str) -> list[str]:
    """The prompts of a JSONL (`prompt` per line) or `.txt` file, or of a built-in set (`general`)."""
    from skillgraft.data.records import read_records

    path = BUILTIN.get(spec, Path(spec))
    if not path.is_file():
        raise UserError(f"{key}: {spec} is neither a file nor a built-in prompt set ({', '.join(BUILTIN)})")
    records = read_records(path, key)
    prompts = [r.get("prompt", r.get("text")) for r in records]
    bad = next((i for i, p in enumerate(prompts, 1) if not isinstance(p, str) or not p.strip()), None)
    if bad is not None:
        raise UserError(f"{key}: {path} record {bad} has no `prompt` text")
    if not prompts:
        raise UserError(f"{key}: {path} holds no prompts")
    return prompts


def check_options(config) -> None:
    """What can be checked before any model is loaded: prompt files, and enough prompts for n."""
    replay = config.data.replay
    if replay.n:
        available = len(read_prompts(replay.prompts, "data.replay.prompts"))
        if replay.n > available:
            raise UserError(f"data.replay.n: {replay.n} replayed chats asked for, but {replay.prompts} has only "
                            f"{available} prompts")
    if config.regularize.kl.weight:
        read_prompts(config.regularize.kl.prompts, "regularize.kl.prompts")
    if config.monitor.enabled and config.monitor.keep == "best":
        probed = set(probe_values(config))
        for key in [config.monitor.keep_by, *config.monitor.keep_floor]:
            if key not in probed:
                raise UserError(f"monitor.keep_by/keep_floor: {key!r} is not a value the monitor probes with this "
                                f"config (probed: {', '.join(sorted(probed)) or 'nothing'})")


def probe_values(config) -> list[str]:
    """The names of the values the monitor will probe with `config` (what `keep_by` and
    `keep_floor` may name): perplexity and retention with general text, validation loss with
    validation data, the samples' distinct ratio with prompts, each suite's `SET.METRIC`."""
    monitor = config.monitor
    names = []
    if monitor.general_text:
        names += ["general_ppl", "retention"]
    if config.data.validation:
        names.append("validation_loss")
    names.append("distinct")
    if monitor.suite:
        from skillgraft.evaluate.suites import load_suite

        names += ["score"] + (["retention"] if not monitor.general_text else [])
        for path in [monitor.suite] if isinstance(monitor.suite, str) else monitor.suite:
            names += [f"{s.name}.{m.name}" for s in load_suite(path).sets for m in s.metrics]
    return names


def _as_prompt(text: str, tokenizer, qa_template: str):
    """A prompt the way training renders a QA record: the chat template's user turn, or the
    raw QA template for a tokenizer without one."""
    if getattr(tokenizer, "chat_template", None):
        return [{"role": "user", "content": text}]
    return qa_template.format(question=text)


def reference_answers(config, model, tokenizer, spec: str, key: str, tokens: int = ANSWER_TOKENS):
    """The model's own greedy answers to the prompts of `spec`, at most `tokens` long (cached
    by the model folder's content hash, the prompts and the decoding settings)."""
    from skillgraft.evaluate.backends.base import GenerationSettings
    from skillgraft.evaluate.backends.hf import HFBackend
    from skillgraft.evaluate.reference import model_fingerprint
    from skillgraft.evaluate.reference import reference_answers as answers
    from skillgraft.train.model import model_dir

    texts = read_prompts(spec, key)
    prompts = [_as_prompt(t, tokenizer, config.data.qa_template) for t in texts]
    settings = GenerationSettings(max_new_tokens=tokens)
    # the loaded weights: the folder, the dtype they were loaded in (`dtype: auto` and the dtype
    # it resolves to are one cache entry), and 4-bit for QLoRA
    loaded = str(getattr(model, "dtype", config.dtype)).removeprefix("torch.")
    fingerprint = (f"{model_fingerprint(model_dir(config.model))}:dtype={loaded}"
                   + (":4bit" if config.method == "qlora" else ""))
    # a note on stderr: stdout is `train --json`'s one object
    log = (lambda message: print(message, file=sys.stderr, flush=True)) if config.progress else None
    return texts, answers(prompts, settings, fingerprint=fingerprint, log=log,
                          load=lambda: HFBackend(model, tokenizer, label=config.model))


def replay_examples(config, model, tokenizer) -> tuple[list, dict]:
    """`data.replay.n` general chats answered by the model itself, encoded as QA examples
    (answer tokens learned); only answers that ended are used (a cut one would teach the
    model to stop mid-sentence). Returns (examples, their `encode_all` report)."""
    from skillgraft.data.encode import encode_all

    replay = config.data.replay
    texts, answers = reference_answers(config, model, tokenizer, replay.prompts, "data.replay.prompts",
                                       replay.answer_tokens)
    ended = [(t, a.text) for t, a in zip(texts, answers) if a.ended and a.text.strip()]
    if len(ended) < replay.n:
        raise UserError(f"data.replay.n: {replay.n} replayed chats asked for, but the model finished only "
                        f"{len(ended)} of its answers to {replay.prompts} within {replay.answer_tokens} tokens "
                        f"(data.replay.answer_tokens): let its answers run longer, or replay fewer")
    chosen = random.Random(replay.seed).sample(ended, replay.n)
    records = [{"question": q, "answer": a} for q, a in chosen]
    examples, report = encode_all(records, "qa", tokenizer, max_length=config.data.max_length, overlong="drop",
                                  answer_only=True, qa_template=config.data.qa_template,
                                  where=f"data.replay {replay.prompts}")
    return examples, report


class KLRegularizer:
    """`weight · mean KL(reference ‖ model)` over the answer tokens of a batch of reference
    answers, every `every` steps (the batches cycle through the answers in a seeded order)."""

    def __init__(self, answers: list, *, weight: float, every: int, batch_size: int, seed: int, pad_id: int,
                 adapters: bool):
        self.answers = [a for a in answers if a.answer_ids]
        if not self.answers:
            raise UserError("regularize.kl: the model gave no answer to any prompt; the KL term would be empty")
        self.weight, self.every, self.batch_size, self.pad_id = weight, every, batch_size, pad_id
        self.adapters = adapters  # LoRA: the reference is the same model with the adapters off
        self.order = list(range(len(self.answers)))
        random.Random(seed).shuffle(self.order)
        self.cursor = 0
        self.last: float | None = None

    def _batch(self) -> list:
        picked = []
        for _ in range(min(self.batch_size, len(self.order))):
            picked.append(self.answers[self.order[self.cursor % len(self.order)]])
            self.cursor += 1
        return picked

    def __call__(self, model, step: int):
        """The term to add to the loss at optimizer step `step` (None: not this step)."""
        import torch

        if step % self.every:
            return None
        batch = self._batch()
        device = next(model.parameters()).device
        width = max(len(a.prompt_ids) + len(a.answer_ids) for a in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, a in enumerate(batch):
            tokens = a.prompt_ids + a.answer_ids
            ids[row, :len(tokens)] = torch.tensor(tokens)
            mask[row, :len(tokens)] = 1
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        # the answer token at absolute position t is predicted at t-1
        spans = [(len(a.prompt_ids) - 1, len(a.prompt_ids) - 1 + len(a.answer_ids)) for a in batch]
        candidate = torch.cat([logits[row, s:e] for row, (s, e) in enumerate(spans)]).float().log_softmax(-1)
        if self.adapters:
            with torch.no_grad(), model.disable_adapter():
                ref_logits = model(input_ids=ids, attention_mask=mask).logits
            reference = torch.cat([ref_logits[row, s:e] for row, (s, e) in enumerate(spans)]).float().log_softmax(-1)
            kl = (reference.exp() * (reference - candidate)).sum(-1)
        else:
            from skillgraft.evaluate.reference import coarse_kl

            top_ids = torch.tensor([t for a in batch for t in a.topk_ids], device=device)
            top_logprobs = torch.tensor([t for a in batch for t in a.topk_logprobs], device=device)
            kl = coarse_kl(top_ids, top_logprobs, candidate)
        term = kl.mean()
        self.last = float(term.detach())
        return self.weight * term


def kl_regularizer(config, model, tokenizer, adapters: bool) -> KLRegularizer | None:
    """The configured regulariser (None when `regularize.kl.weight` is 0)."""
    kl = config.regularize.kl
    if not kl.weight:
        return None
    _, answers = reference_answers(config, model, tokenizer, kl.prompts, "regularize.kl.prompts")
    return KLRegularizer(answers, weight=kl.weight, every=kl.every, batch_size=kl.batch_size, seed=config.seed,
                         pad_id=tokenizer.pad_token_id, adapters=adapters)
