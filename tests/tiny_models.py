"""Test fixtures: tiny, real Hugging Face checkpoints built from configs (tests and benchmarks).

A tiny model here is a genuine checkpoint folder (config.json, safetensors shards with an
index when sharded, tokenizer.json + tokenizer_config.json with a chat template) that loads
with plain `AutoModelForCausalLM` / `AutoTokenizer`. Nothing is downloaded: weights are
random (seeded) and the tokenizer is a word-level vocabulary built with `tokenizers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

DEFAULT_WORDS = (
    "the a is of and to in what who where when how which answer question user assistant "
    "system one two three four five six seven eight nine ten plus minus capital city "
    "country name likes sees knows . ? , ! : Q A"
).split()


def build_tokenizer(words: Iterable[str] = DEFAULT_WORDS, **options):
    """The lab's word-level tokenizer over `words` (the tiny default vocabulary unless given)."""
    from skillgraft.lab.tiny import build_tokenizer as lab_tokenizer

    return lab_tokenizer(words, **options)


def build_tiny_model(out_dir: str | Path, family: str = "llama", *, seed: int = 0, dtype: str = "float32",
                     shard_size: str | int | None = None, words: Iterable[str] = DEFAULT_WORDS,
                     tie_embeddings: bool | None = None, tokenizer=None, **config_kwargs) -> Path:
    """Create a random tiny causal LM checkpoint folder with tokenizer and chat template.

    `shard_size` (e.g. "20KB") makes `save_pretrained` write several shards plus an index,
    so tests exercise the sharded layout with boundaries that differ between models.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from skillgraft.lab.tiny import tiny_config

    out_dir = Path(out_dir)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(words)
    config = tiny_config(family, vocab_size=len(tokenizer), tie_embeddings=tie_embeddings,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **config_kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model = model.to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    save_kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(out_dir, **save_kwargs)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def perturb_model(src_dir: str | Path, out_dir: str | Path, *, seed: int, scale: float = 0.02,
                  shard_size: str | int | None = None) -> Path:
    """Copy a tiny checkpoint with every floating tensor nudged by seeded noise.

    Stands in for "the same architecture after fine-tuning" (a skilled or CP model).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src_dir)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.is_floating_point():
                noise = torch.randn(param.shape, generator=generator) * scale
                param.add_(noise.to(param.dtype))
    save_kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(out_dir, **save_kwargs)
    AutoTokenizer.from_pretrained(src_dir).save_pretrained(out_dir)
    return Path(out_dir)
