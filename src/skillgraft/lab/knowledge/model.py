"""The knowledge study's tiny Llama and its LoRA job, on `skillgraft.lab.train`.

Why a separate factory: the study needs the prototype's 4-layer shape with untied
embeddings, passed to `lab.train.new_model`. Plain training is `lab.train.train_lm` and
`train_sft`; the LoRA adapters come from the project's training layer
(`skillgraft.train.model.add_lora` with its `LoraConfig`, presets in
`skillgraft.train.targets`), so the study measures exactly what `skillgraft train` would build.
"""

from __future__ import annotations

from skillgraft.lab.train import Budget, lm_rows, train_budget
from skillgraft.lab.train import new_model as lab_new_model

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


def train_lora(model, tokenizer, docs, budget: Budget, seed: int, targets: str, *, desc: str, quiet: bool):
    """Next-token training of a LoRA adapter on `targets` (a `skillgraft.train` preset); returns the
    merged model, so it is evaluated and saved like any plain checkpoint."""
    import torch

    from skillgraft.train.config import LoraConfig
    from skillgraft.train.model import add_lora

    torch.manual_seed(seed)
    peft_model, _, _ = add_lora(model, LoraConfig(r=LORA_RANK, alpha=LORA_ALPHA, targets=targets))
    peft_model = train_budget(peft_model, tokenizer, lm_rows(tokenizer, docs), budget, seed, desc=desc, quiet=quiet)
    merged = peft_model.merge_and_unload()
    merged.eval()
    return merged
