"""Tiny-model factory and the two training jobs of the lab, run through the training layer.

Both jobs go through `skillgraft.train.loop.train_rows` (the Trainer loop `skillgraft train`
uses); what is the lab's own here is the budget (`Budget`: steps, batch, peak lr of a cosine
schedule) and its rows. On one machine a build is bit-reproducible (fixed seeds, one torch
thread, no dataloader workers, CPU kernels pinned by `lab.kernels`). The two jobs:
language-model training (`train_lm`: base pretraining and continued pretraining) and
answer-only supervised fine-tuning (`train_sft`) with embeddings and `lm_head` frozen —
the prototype showed that training the output rows on a small name pool biases answers
against names unseen in fine-tuning, and a frozen vocabulary also keeps the vector in
the transformer blocks, where a chat vector lives.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

MODEL_SHAPE = dict(hidden=64, layers=3, heads=4, intermediate=128)


@dataclass(frozen=True)
class Budget:
    """One training job's budget: steps, batch size, peak learning rate (cosine, warmup)."""

    steps: int
    batch: int
    lr: float
    warmup: int = 50


def set_threads(n: int = 1) -> None:
    """Cap torch at `n` CPU threads. One thread: these models are too small to gain from more,
    and on a busy 2-core machine two threads ran 6x slower (measured 31.8 s vs 5.3 s per 100 steps)."""
    import torch

    torch.set_num_threads(n)


def new_model(tokenizer, seed: int, shape: dict | None = None, **config_options):
    """A fresh tiny Llama for `tokenizer`, initialised from `seed`: the lab's shape (about 140k
    parameters) unless `shape` says otherwise; `config_options` go to `tiny_config`
    (e.g. `tie_embeddings=False`)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from skillgraft.lab.tiny import tiny_config

    config = tiny_config("llama", vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         **(shape or MODEL_SHAPE), **config_options)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    return model


def lm_rows(tokenizer, docs: Sequence[str]) -> list[dict]:
    """Language-model rows: `<s> doc </s>`, loss on every token."""
    rows = []
    for doc in docs:
        ids = tokenizer(doc)["input_ids"] + [tokenizer.eos_token_id]
        rows.append({"input_ids": ids, "labels": list(ids)})
    return rows


def sft_rows(tokenizer, pairs: Sequence[tuple[str, str]]) -> list[dict]:
    """Fine-tuning rows: `<s> prompt answer </s>`, loss on `answer </s>` only."""
    rows = []
    for prompt, answer in pairs:
        p = tokenizer(prompt)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append({"input_ids": p + a, "labels": [-100] * len(p) + a})
    return rows


def train_budget(model, tokenizer, rows: list[dict], budget: Budget, seed: int, *, desc: str, quiet: bool):
    """Train for `budget.steps` steps through the training layer's `train_rows` (cosine
    schedule, no weight decay, nothing saved or logged); a temp folder takes Trainer's
    bookkeeping."""
    from transformers import TrainingArguments
    from transformers.utils import logging as hf_logging

    from skillgraft.train.loop import train_rows

    hf_logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="skillgraft-lab-") as tmp:
        args = TrainingArguments(
            output_dir=tmp, max_steps=budget.steps, per_device_train_batch_size=budget.batch,
            learning_rate=budget.lr, lr_scheduler_type="cosine", warmup_steps=budget.warmup,
            weight_decay=0.0, save_strategy="no", report_to=[], logging_strategy="no",
            seed=seed, data_seed=seed, use_cpu=True, dataloader_num_workers=0,
            disable_tqdm=quiet, remove_unused_columns=False,
        )
        if not quiet:
            print(f"[lab] {desc}: {budget.steps} steps", file=sys.stderr)
        train_rows(model, rows, args, pad_id=tokenizer.pad_token_id, quiet=quiet)
    model.eval()
    return model


def train_lm(model, tokenizer, docs: Sequence[str], budget: Budget, seed: int, *, desc: str = "lm",
             quiet: bool = True):
    """Next-token training on `docs`, all parameters trainable (base, CP, the knowledge
    study's stage 1 and full injection)."""
    for p in model.parameters():
        p.requires_grad_(True)
    return train_budget(model, tokenizer, lm_rows(tokenizer, docs), budget, seed, desc=desc, quiet=quiet)


def train_sft(model, tokenizer, pairs: Sequence[tuple[str, str]], budget: Budget, seed: int, *,
              desc: str = "sft", quiet: bool = True, replay: Sequence[str] = ()):
    """Answer-only fine-tuning with the input embeddings and `lm_head` frozen; `replay`
    documents are mixed in as plain language-model rows (loss on every token)."""
    for name, p in model.named_parameters():
        p.requires_grad_(not (name.startswith("model.embed_tokens") or name.startswith("lm_head")))
    rows = sft_rows(tokenizer, pairs) + lm_rows(tokenizer, replay)
    model = train_budget(model, tokenizer, rows, budget, seed, desc=desc, quiet=quiet)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def save_model(model, tokenizer, out_dir: Path) -> Path:
    """Write a normal checkpoint folder (safetensors + config + tokenizer)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
