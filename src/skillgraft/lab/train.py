"""Tiny-model factory and the two training jobs of the lab, on plain `transformers.Trainer`.

Why plain Trainer: the lab must build on any machine with transformers installed and stay
bit-reproducible on CPU (fixed seed, two threads, no dataloader workers). Two jobs:
language-model training (`train_lm`: base pretraining and continued pretraining) and
answer-only supervised fine-tuning (`train_sft`) with embeddings and `lm_head` frozen —
the prototype showed that training the output rows on a small name pool biases answers
against names unseen in fine-tuning, and a frozen vocabulary also keeps the vector in
the transformer blocks, where a chat vector lives.
"""

from __future__ import annotations

import contextlib
import io
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


class _Collator:
    """Right-pads `input_ids`/`labels` of a batch; padding is masked out of the loss."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows):
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


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


def train_rows(model, tokenizer, rows: list[dict], schedule: Budget, seed: int, *, desc: str, quiet: bool):
    """Run `Trainer` for `schedule.steps` steps; a temp folder takes Trainer's bookkeeping."""
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="skillgraft-lab-") as tmp:
        args = TrainingArguments(
            output_dir=tmp, max_steps=schedule.steps, per_device_train_batch_size=schedule.batch,
            learning_rate=schedule.lr, lr_scheduler_type="cosine", warmup_steps=schedule.warmup,
            weight_decay=0.0, save_strategy="no", report_to=[], logging_strategy="no",
            seed=seed, data_seed=seed, use_cpu=True, dataloader_num_workers=0,
            disable_tqdm=quiet, remove_unused_columns=False,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows,
                          data_collator=_Collator(tokenizer.pad_token_id))
        if not quiet:
            print(f"[lab] {desc}: {schedule.steps} steps", file=sys.stderr)
        # Trainer prints its final metrics dict on stdout; stdout is reserved for --json.
        with contextlib.redirect_stdout(sys.stderr if not quiet else io.StringIO()):
            trainer.train()
    model.eval()
    return model


def train_lm(model, tokenizer, docs: Sequence[str], schedule: Budget, seed: int, *, desc: str = "lm",
             quiet: bool = True):
    """Next-token training on `docs`, all parameters trainable (base and CP)."""
    for p in model.parameters():
        p.requires_grad_(True)
    return train_rows(model, tokenizer, lm_rows(tokenizer, docs), schedule, seed, desc=desc, quiet=quiet)


def train_sft(model, tokenizer, pairs: Sequence[tuple[str, str]], schedule: Budget, seed: int, *,
              desc: str = "sft", quiet: bool = True, replay: Sequence[str] = ()):
    """Answer-only fine-tuning with the input embeddings and `lm_head` frozen; `replay`
    documents are mixed in as plain language-model rows (loss on every token)."""
    for name, p in model.named_parameters():
        p.requires_grad_(not (name.startswith("model.embed_tokens") or name.startswith("lm_head")))
    rows = sft_rows(tokenizer, pairs) + lm_rows(tokenizer, replay)
    model = train_rows(model, tokenizer, rows, schedule, seed, desc=desc, quiet=quiet)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def save_model(model, tokenizer, out_dir: Path) -> Path:
    """Write a normal checkpoint folder (safetensors + config + tokenizer)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
