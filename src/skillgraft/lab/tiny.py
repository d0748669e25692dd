"""The lab's tiny models: a word-level tokenizer with a ChatML template and a tiny config.

A lab model is a genuine checkpoint folder that loads with plain `AutoModelForCausalLM` /
`AutoTokenizer`; nothing is downloaded. A word-level vocabulary keeps every token readable
and the effect of a training run countable word by word.
"""

from __future__ import annotations

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


def build_tokenizer(words: Iterable[str], *, chat_template: str | None = CHATML_TEMPLATE,
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
