"""The knowledge study's tiny Llama and its three training jobs, built on `skillgraft.lab.train`.

Why a separate factory: the study needs the prototype's 4-layer shape, and
`lab.train.new_model` is fixed to the chat-vector lab's 3-layer shape; the shape is passed
here instead of editing that module. Training reuses the lab's plain-`Trainer` loop
(`train_rows`, bit-reproducible on CPU with one thread) and its row builders; LoRA adapters
come from the project's training layer (`skillgraft.train.model.add_lora`, presets in
`skillgraft.train.targets`), so the study measures exactly what `skillgraft train` would build.
"""

from __future__ import annotations

from types import SimpleNamespace

from skillgraft.lab.train import Budget, lm_rows, train_rows, train_sft
from skillgraft.lab.train import new_model as lab_new_model

__all__ = ["MODEL_SHAPE", "Budget", "build_tokenizer", "new_model", "train_text", "train_text_lora", "train_sft"]

MODEL_SHAPE = dict(hidden=64, layers=4, heads=4, intermediate=128)
LORA_RANK = 16
LORA_ALPHA = 32


def build_tokenizer():
    """Word-level tokenizer over the whole knowledge world (names, values, templates, styles)."""
    from skillgraft.lab.knowledge.world import vocabulary
    from skillgraft.lab.tiny import build_tokenizer as _build

    return _build(vocabulary())


def new_model(tokenizer, seed: int, shape: dict | None = None):
    """A fresh tiny Llama (untied embeddings) for `tokenizer`, initialised from `seed`."""
    return lab_new_model(tokenizer, seed, shape or MODEL_SHAPE, tie_embeddings=False)


def train_text(model, tokenizer, docs, schedule: Budget, seed: int, *, desc: str, quiet: bool):
    """Next-token training on `docs` with every parameter trainable (stage 1, full injection)."""
    for p in model.parameters():
        p.requires_grad_(True)
    return train_rows(model, tokenizer, lm_rows(tokenizer, docs), schedule, seed, desc=desc, quiet=quiet)


def train_text_lora(model, tokenizer, docs, schedule: Budget, seed: int, targets: str, *, desc: str,
                    quiet: bool):
    """Next-token training of a LoRA adapter on `targets` (a `skillgraft.train` preset); returns the
    merged model, so it is evaluated and saved like any plain checkpoint."""
    import torch

    from skillgraft.train.model import add_lora

    cfg = SimpleNamespace(lora=SimpleNamespace(r=LORA_RANK, alpha=LORA_ALPHA, dropout=0.0, targets=targets,
                                               modules_to_save=None, tied_lm_head="untie"))
    torch.manual_seed(seed)
    peft_model, _, _ = add_lora(model, cfg)
    peft_model = train_rows(peft_model, tokenizer, lm_rows(tokenizer, docs), schedule, seed, desc=desc, quiet=quiet)
    merged = peft_model.merge_and_unload()
    merged.eval()
    return merged
