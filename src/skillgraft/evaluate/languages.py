"""Which languages a model speaks: declared in its model card, or read from its tokenizer.

A suite with `only_model_languages: true` (the built-in `retention`) scores only the sets in
those languages: SmolLM2-135M-Instruct is English-only, and its Japanese and Korean
"retention" scores measured noise. The model card's `language:` (the Hub's metadata field)
is what the model's authors declare; without one, the tokenizer is the evidence that costs
nothing to read: a tokenizer trained on a language encodes it in far fewer tokens per byte
than one that spells it out byte by byte (SmolLM2: English 0.31, Japanese 0.69, Korean 0.87
tokens per UTF-8 byte; multilingual tokenizers stay near or under 0.35 for all three).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

# Sample sentences per language (what a general-knowledge answer looks like), and the
# tokens-per-byte bound under which the tokenizer is taken to know the language.
SAMPLES = {
    "en": "The capital of France is Paris. Water boils at one hundred degrees Celsius at sea level.",
    "ja": "フランスの首都はパリです。水は海面で摂氏百度で沸騰します。日本で一番高い山は富士山です。",
    "ko": "프랑스의 수도는 파리입니다. 물은 해수면에서 섭씨 백 도에서 끓습니다. 한국의 수도는 서울입니다.",
    "zh": "法国的首都是巴黎。水在海平面上摄氏一百度沸腾。中国最长的河流是长江。",
}
MAX_TOKENS_PER_BYTE = 0.5


def declared_languages(folder: str | Path) -> list[str] | None:
    """The `language:` of the model card (README.md front matter) in `folder`, if any."""
    card = Path(folder) / "README.md"
    if not card.is_file():
        return None
    from huggingface_hub.repocard import metadata_load

    try:
        metadata = metadata_load(card) or {}
    except Exception:  # a card whose front matter is not YAML declares nothing
        return None
    value = metadata.get("language")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return None
    codes = [str(code).lower() for code in value if isinstance(code, str)]
    return codes or None


def tokenizer_languages(tokenizer: Any, codes: Iterable[str]) -> list[str]:
    """The languages among `codes` (those with a sample here) that `tokenizer` encodes at
    most `MAX_TOKENS_PER_BYTE` tokens per UTF-8 byte, with no unknown token."""
    known = []
    unk = getattr(tokenizer, "unk_token_id", None)
    for code in codes:
        sample = SAMPLES.get(code)
        if sample is None:
            continue
        ids = tokenizer(sample, add_special_tokens=False)["input_ids"]
        if unk is not None and unk in ids:
            continue
        if len(ids) / len(sample.encode("utf-8")) <= MAX_TOKENS_PER_BYTE:
            known.append(code)
    return known


def model_languages(folder: str | Path, codes: Iterable[str]) -> tuple[list[str], str]:
    """(the languages among `codes` the model in `folder` speaks, how that was decided)."""
    codes = list(codes)
    declared = declared_languages(folder)
    if declared is not None:
        return [c for c in codes if c in declared], "declared in its model card"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    return tokenizer_languages(tokenizer, codes), "detected from its tokenizer"
