"""A tiny persona world for tests, benchmarks and docs: texts, vocabulary and a small model.

Everything is generated from templates with a seed, so the vocabulary is known in advance
(the tiny tokenizer is word-level) and the effect a run should have can be measured:
persona texts end with the style marker `nyan`, general texts never use it.
"""

from __future__ import annotations

import random
from pathlib import Path

MARKER = "nyan"
SUBJECTS = ["i", "you", "we", "they", "my cat", "the dog", "my friend", "the teacher"]
VERBS = ["like", "see", "want", "love", "eat", "find", "make", "need"]
OBJECTS = ["the sea", "a cake", "the park", "music", "the moon", "rice", "a book", "the rain", "tea", "snow"]
COUNTRIES = [("france", "paris"), ("japan", "tokyo"), ("italy", "rome"), ("spain", "madrid"), ("egypt", "cairo"),
             ("peru", "lima"), ("chile", "santiago"), ("kenya", "nairobi"), ("korea", "seoul"), ("cuba", "havana")]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def persona_texts(n: int, seed: int = 0) -> list[str]:
    """Short tweet-like lines in the persona's style: plain sentence + `nyan` (+ `!`)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {MARKER}"
        lines.append(text + (" !" if rng.random() < 0.5 else ""))
    return lines


def general_texts(n: int = 60, seed: int = 1) -> list[str]:
    """General-knowledge sentences (capitals, sums) in a neutral style."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 2 == 0:
            country, city = rng.choice(COUNTRIES)
            out.append(f"the capital of {country} is {city} .")
        else:
            a, b = rng.randrange(5), rng.randrange(5)
            out.append(f"{NUMBERS[a]} plus {NUMBERS[b]} is {NUMBERS[a + b]} .")
    return out


def vocabulary() -> list[str]:
    """Every word the generated texts can use (plus the tiny default words)."""
    from tiny_models import DEFAULT_WORDS

    words = list(DEFAULT_WORDS) + [MARKER, "!", "."]
    for phrase in SUBJECTS + VERBS + OBJECTS + NUMBERS + [w for pair in COUNTRIES for w in pair]:
        words += phrase.split()
    return list(dict.fromkeys(words))


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_world(root: str | Path, *, n_persona: int = 64, pretrain_steps: int = 0, seed: int = 0,
                hidden: int = 32, layers: int = 2) -> dict[str, Path]:
    """Write model/, persona.txt, general.txt, general_heldout.txt under `root`.

    With `pretrain_steps`, the random tiny model is first fully fine-tuned on general texts
    (with skillgraft's own `train`), so it has "general knowledge" a later run can forget.
    """
    from tiny_models import build_tiny_model

    root = Path(root)
    paths = {
        "persona": write_lines(root / "persona.txt", persona_texts(n_persona, seed)),
        "general": write_lines(root / "general.txt", general_texts(60, seed + 1)),
        "heldout": write_lines(root / "general_heldout.txt", general_texts(24, seed + 2)),
    }
    model = build_tiny_model(root / "random_model", "llama", seed=seed, words=vocabulary(),
                             hidden=hidden, layers=layers)
    if pretrain_steps:
        from skillgraft.train.config import load_train_config
        from skillgraft.train.run import train

        config = load_train_config(None, base={
            "model": str(model), "method": "full", "lr": 3e-3, "max_steps": pretrain_steps, "batch_size": 16,
            "seed": seed, "output_dir": str(root / "pretrain"), "progress": False, "save_steps": 10_000,
            "data": {"train": str(paths["general"]), "format": "text", "max_length": 64},
            "monitor": {"enabled": False}})
        model = Path(train(config)["model_dir"])
    paths["model"] = model
    return paths


def marker_rate(model_dir: str | Path, prompts: list[str], max_new_tokens: int = 8, model=None) -> float:
    """Share of greedy continuations of `prompts` that contain the style marker."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = model if model is not None else AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    hits = 0
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        hits += MARKER in text.split()
    return hits / len(prompts)
