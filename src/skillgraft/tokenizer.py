"""Tokenizer checks and chat-template transplant between checkpoints.

Seed 001 step 3 compares tokenizers by hand before grafting: a vector's embedding rows only
mean something in a target that numbers tokens the same way. Seed 004 grafts a chat vector
onto a model whose tokenizer has no chat template and borrows the Instruct model's (with
its end-of-turn token). Both are done here from the tokenizer files alone (tokenizer.json
via the `tokenizers` library; transformers only as a fallback for sentencepiece-only
folders), never with remote code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from skillgraft.errors import UserError

# End-of-turn tokens of common chat templates: a chat answer ends there (generation stops at
# them; training learns them once, as the model will emit them).
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")

SAMPLES = [
    "The capital of Japan is Tokyo.",
    "日本の首都は東京です。",
    "한국의 수도는 서울입니다.",
    "def add(a, b):\n    return a + b",
    "Q: what is seven plus two ? A: nine",
]


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def backend_tokenizer(folder: Path):
    """A `tokenizers.Tokenizer` for the folder, or None when it has no usable tokenizer."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        try:
            return Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # the Rust side raises a plain Exception
            raise UserError(f"{folder / 'tokenizer.json'}: cannot be read ({exc})") from None
    if any((folder / name).is_file() for name in ("tokenizer.model", "vocab.json", "spiece.model")):
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False).backend_tokenizer
        except Exception:  # no fast conversion available: treat as unknown
            return None
    return None


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def compare_tokenizers(reference: Path, target: Path) -> dict:
    """Relation between two tokenizers: identical, target_extends, different or unknown.

    `target_extends` means every token of the reference has the same id in the target,
    which has more (a continually pretrained model that extended its vocabulary).
    """
    ref_tok, tgt_tok = backend_tokenizer(reference), backend_tokenizer(target)
    report: dict = {"reference": str(reference), "target": str(target)}
    if ref_tok is None or tgt_tok is None:
        missing = reference if ref_tok is None else target
        return {**report, "relation": "unknown", "note": f"no tokenizer files in {missing}"}
    ref_vocab = ref_tok.get_vocab(with_added_tokens=True)
    tgt_vocab = tgt_tok.get_vocab(with_added_tokens=True)
    if ref_vocab == tgt_vocab:
        relation = "identical"
    elif all(tgt_vocab.get(token) == index for token, index in ref_vocab.items()):
        relation = "target_extends"
    else:
        relation = "different"
    shared = sum(1 for token, index in ref_vocab.items() if tgt_vocab.get(token) == index)
    samples = []
    for text in SAMPLES:
        ref_ids, tgt_ids = _encode(ref_tok, text), _encode(tgt_tok, text)
        samples.append({"text": text, "same": ref_ids == tgt_ids, "reference_tokens": len(ref_ids),
                        "target_tokens": len(tgt_ids)})
    return {**report, "relation": relation, "reference_vocab": len(ref_vocab), "target_vocab": len(tgt_vocab),
            "shared_same_id": shared, "samples": samples}


# -- chat template transplant -----------------------------------------------------------------
def read_chat_template(folder: Path) -> str | None:
    """The folder's chat template: chat_template.jinja, chat_template.json or tokenizer_config.json."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            template = _json(folder / name).get("chat_template")
            if isinstance(template, list):  # named templates: take "default"
                named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
                template = named.get("default") or next(iter(named.values()), None)
            if isinstance(template, str):
                return template
    return None


def _special_tokens(folder: Path) -> dict[str, str]:
    """Special-token strings of a tokenizer folder: role (bos/eos/...) or 'added' -> content."""
    tokens: dict[str, str] = {}
    config = _json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    for role in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = config.get(role)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            tokens[role] = value
    if (folder / "tokenizer.json").is_file():
        for entry in _json(folder / "tokenizer.json").get("added_tokens", []):
            if isinstance(entry, dict) and isinstance(entry.get("content"), str):
                tokens.setdefault(f"added:{entry['content']}", entry["content"])
    for entry in (config.get("added_tokens_decoder") or {}).values():
        if isinstance(entry, dict) and isinstance(entry.get("content"), str):
            tokens.setdefault(f"added:{entry['content']}", entry["content"])
    return tokens


def tokens_needed_by_template(template: str, source: Path) -> list[str]:
    """Special tokens of `source` that the template emits: written literally or via a
    `bos_token` / `eos_token` variable."""
    needed = []
    for role, content in _special_tokens(source).items():
        literal = len(content) > 1 and content in template
        variable = role in ("bos_token", "eos_token") and re.search(rf"\b{role}\b", template)
        if (literal or variable) and content not in needed:
            needed.append(content)
    return needed


def stop_token_strings(source: Path, source_tok) -> list[str]:
    """The source's stop tokens as strings (generation_config eos ids + tokenizer eos)."""
    strings = []
    if (source / "generation_config.json").is_file() and source_tok is not None:
        ids = _json(source / "generation_config.json").get("eos_token_id")
        for token_id in ids if isinstance(ids, list) else [ids]:
            if isinstance(token_id, int) and (text := source_tok.id_to_token(token_id)) is not None:
                strings.append(text)
    eos = _special_tokens(source).get("eos_token")
    if eos and eos not in strings:
        strings.append(eos)
    return strings


def plan_chat_template(source: Path, target: Path) -> dict:
    """Check, before any weights are written, that `target` can carry `source`'s template.

    Errors if the template needs a token the target vocabulary lacks. Returns the plan that
    `apply_chat_template` carries out on the output folder.
    """
    source = Path(source)
    template = read_chat_template(source)
    if template is None:
        raise UserError(f"--chat-template-from {source}: no chat template found there")
    target_tok = backend_tokenizer(target)
    if target_tok is None:
        raise UserError(f"--chat-template-from: the target {target} has no tokenizer files to carry a chat template")
    vocab = target_tok.get_vocab(with_added_tokens=True)
    needed = tokens_needed_by_template(template, source)
    missing = [token for token in needed if token not in vocab]
    if missing:
        raise UserError(f"--chat-template-from {source}: the template needs {', '.join(missing)}, which the "
                        "target's vocabulary lacks (graft onto a target that has them, or add them first)")
    return {"source": source, "template": template, "needed": needed, "vocab": vocab}


def apply_chat_template(plan: dict, out: Path) -> dict:
    """Write the planned template into the tokenizer files already copied to `out`.

    Tokens it needs that the target has only as ordinary vocabulary entries are registered
    as special added tokens so they are never split; the source's stop tokens that the
    target knows are added to generation_config.json's eos_token_id.
    """
    registered = _register_special(out, plan["needed"])
    (out / "chat_template.jinja").write_text(plan["template"])
    config_path = out / "tokenizer_config.json"
    if config_path.is_file():
        config = _json(config_path)
        if "chat_template" in config:
            config["chat_template"] = plan["template"]
            config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (out / "chat_template.json").unlink(missing_ok=True)
    stop_ids = _merge_stop_tokens(plan["source"], out, plan["vocab"])
    return {"source": str(plan["source"].resolve()), "tokens_needed": plan["needed"],
            "registered_as_special": registered, "eos_token_id": stop_ids}


def _register_special(out: Path, tokens: list[str]) -> list[str]:
    path = out / "tokenizer.json"
    if not path.is_file() or not tokens:
        return []
    data = _json(path)
    added = data.setdefault("added_tokens", [])
    present = {entry.get("content") for entry in added if isinstance(entry, dict)}
    vocab = (data.get("model") or {}).get("vocab")
    registered = []
    for token in tokens:
        if token in present or not isinstance(vocab, dict) or token not in vocab:
            continue
        added.append({"id": vocab[token], "content": token, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
        registered.append(token)
    if registered:
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    return registered


def _merge_stop_tokens(source: Path, out: Path, target_vocab: dict[str, int]) -> list[int]:
    from tokenizers import Tokenizer

    source_tok = Tokenizer.from_file(str(source / "tokenizer.json")) if (source / "tokenizer.json").is_file() else None
    gen_path = out / "generation_config.json"
    gen = _json(gen_path) if gen_path.is_file() else {}
    current = gen.get("eos_token_id")
    ids = [i for i in (current if isinstance(current, list) else [current]) if isinstance(i, int)]
    for text in stop_token_strings(source, source_tok):
        if text in target_vocab and target_vocab[text] not in ids:
            ids.append(target_vocab[text])
    if ids:
        gen["eos_token_id"] = ids if len(ids) > 1 else ids[0]
        gen_path.write_text(json.dumps(gen, indent=2) + "\n")
    return ids
