"""Tiny, real Hugging Face checkpoints built from configs, for tests, benchmarks and the lab.

A tiny model here is a genuine checkpoint folder (config.json, safetensors shards with an
index when sharded, tokenizer.json + tokenizer_config.json with a chat template) that loads
with plain `AutoModelForCausalLM` / `AutoTokenizer`. Nothing is downloaded: weights are
random (seeded) and the tokenizer is a word-level vocabulary built with `tokenizers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

# A chat template in the ChatML style, using only tokens the tiny vocabularies contain.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + ' ' + message['content'] + ' <|im_end|> ' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant ' }}{% endif %}"
)

SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
DEFAULT_WORDS = (
    "the a is of and to in what who where when how which answer question user assistant "
    "system one two three four five six seven eight nine ten plus minus capital city "
    "country name likes sees knows . ? , ! : Q A"
).split()


def build_tokenizer(words: Iterable[str] = DEFAULT_WORDS, *, chat_template: str | None = CHATML_TEMPLATE,
                    extra_special: Iterable[str] = CHAT_TOKENS):
    """A word-level fast tokenizer (whitespace split) with BOS/EOS/PAD/UNK and chat tokens.

    Returns a `transformers` fast tokenizer; `save_pretrained` writes a normal tokenizer folder.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    extra_special = list(extra_special)
    vocab: dict[str, int] = {}
    for token in [*SPECIAL_TOKENS, *extra_special, *words]:
        vocab.setdefault(token, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=extra_special or None,
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def tiny_config(family: str = "llama", *, vocab_size: int, hidden: int = 32, layers: int = 2,
                heads: int = 4, intermediate: int = 64, tie_embeddings: bool | None = None,
                bos_token_id: int = 2, eos_token_id: int = 3, pad_token_id: int = 0):
    """A transformers config for a tiny model of `family` (llama, mistral, qwen2, gpt2)."""
    import transformers

    common = dict(vocab_size=vocab_size, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                  pad_token_id=pad_token_id)
    if family == "gpt2":
        config = transformers.GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_inner=intermediate,
                                         n_positions=128, **common)
        config.tie_word_embeddings = True if tie_embeddings is None else tie_embeddings
        return config
    classes = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config"}
    if family not in classes:
        raise ValueError(f"unknown tiny family {family!r}; choose from gpt2, {', '.join(classes)}")
    config_cls = getattr(transformers, classes[family])
    return config_cls(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2), intermediate_size=intermediate,
        max_position_embeddings=256, tie_word_embeddings=bool(tie_embeddings), **common,
    )


def build_tiny_model(out_dir: str | Path, family: str = "llama", *, seed: int = 0, dtype: str = "float32",
                     shard_size: str | int | None = None, words: Iterable[str] = DEFAULT_WORDS,
                     tie_embeddings: bool | None = None, tokenizer=None, **config_kwargs) -> Path:
    """Create a random tiny causal LM checkpoint folder with tokenizer and chat template.

    `shard_size` (e.g. "20KB") makes `save_pretrained` write several shards plus an index,
    so tests exercise the sharded layout with boundaries that differ between models.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

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
