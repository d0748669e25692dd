"""Tokenizer comparison and chat-template transplant, on tokenizers built on the fly."""

from __future__ import annotations

import json

import pytest
import torch

from tiny_models import DEFAULT_WORDS, build_tiny_model, build_tokenizer, perturb_model
from skillgraft.tokenizer import compare_tokenizers

LLAMA3_STYLE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|> {{ m['role'] }} <|end_header_id|> "
    "{{ m['content'] }} <|eot_id|> {% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|> assistant <|end_header_id|> {% endif %}"
)
HEADER_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def make(tmp_path, name, *, words=DEFAULT_WORDS, template=None, extra=()):
    tokenizer = build_tokenizer(words, chat_template=template, extra_special=list(extra))
    return build_tiny_model(tmp_path / name, "llama", seed=0, tokenizer=tokenizer)


@pytest.fixture
def instruct(tmp_path):
    folder = make(tmp_path, "instruct", template=LLAMA3_STYLE, extra=HEADER_TOKENS)
    gen = json.loads((folder / "generation_config.json").read_text())
    from transformers import AutoTokenizer

    eot = AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids("<|eot_id|>")
    gen["eos_token_id"] = [gen["eos_token_id"], eot]
    (folder / "generation_config.json").write_text(json.dumps(gen))
    return folder


def test_compare_identical_extends_different(tmp_path):
    a = make(tmp_path, "a")
    b = make(tmp_path, "b")
    extended = make(tmp_path, "ext", words=[*DEFAULT_WORDS, "東京", "서울"])
    shuffled = make(tmp_path, "shuf", words=list(reversed(DEFAULT_WORDS)))
    assert compare_tokenizers(a, b)["relation"] == "identical"
    report = compare_tokenizers(a, extended)
    assert report["relation"] == "target_extends"
    assert report["target_vocab"] - report["reference_vocab"] == 2
    assert report["shared_same_id"] == report["reference_vocab"]
    different = compare_tokenizers(a, shuffled)
    assert different["relation"] == "different"
    assert any(not sample["same"] for sample in different["samples"])


def test_with_embeddings_across_vocabularies_maps_rows_by_token(tmp_path, run_cli):
    from safetensors.torch import load_file

    a = make(tmp_path, "a")
    a2 = perturb_model(a, tmp_path / "a2", seed=7)
    extended = make(tmp_path, "ext", words=[*DEFAULT_WORDS, "東京"])
    status, out, err = run_cli("graft", extended, "--delta", a, a2, "-o", tmp_path / "emb", "--with-embeddings",
                               "--json")
    assert status == 0, err
    result = json.loads(out)
    assert result["tokenizers"][0]["relation"] == "target_extends"
    assert result["vocab_alignment"][0]["target_only"] == 1
    before, after = load_file(extended / "model.safetensors"), load_file(tmp_path / "emb" / "model.safetensors")
    new_row = before["model.embed_tokens.weight"].shape[0] - 1  # 東京, appended last
    assert torch.equal(after["model.embed_tokens.weight"][new_row], before["model.embed_tokens.weight"][new_row])
    assert not torch.equal(after["model.embed_tokens.weight"][:new_row], before["model.embed_tokens.weight"][:new_row])
    status, out, err = run_cli("graft", extended, "--delta", a, a2, "-o", tmp_path / "out", "--json")
    assert status == 0, err
    kept = {e["tensor"] for e in json.loads(out)["skipped"] if "of the target" in e["reason"]}
    assert kept == {"model.embed_tokens.weight", "lm_head.weight"}


def test_chat_template_transplant(tmp_path, run_cli, instruct):
    from transformers import AutoTokenizer

    target = make(tmp_path, "target", extra=HEADER_TOKENS)  # has the tokens, no template
    status, out, err = run_cli("graft", target, "--delta", target, target, "-o", tmp_path / "out",
                               "--chat-template-from", instruct, "--json")
    assert status == 0, err
    report = json.loads(out)["chat_template"]
    assert set(report["tokens_needed"]) == {*HEADER_TOKENS, "<s>"}
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "who is the capital ?"}],
                                        add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert eot in ids and tokenizer.unk_token_id not in ids
    gen = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [tokenizer.eos_token_id, eot]
    assert report["eos_token_id"] == [tokenizer.eos_token_id, eot]


def test_chat_template_needing_missing_token_is_refused(tmp_path, run_cli, instruct):
    target = make(tmp_path, "target")  # no header tokens at all
    status, _, err = run_cli("graft", target, "--delta", target, target, "-o", tmp_path / "out",
                             "--chat-template-from", instruct)
    last = err.strip().splitlines()[-1]
    assert status == 2 and last.startswith("error:") and "<|eot_id|>" in last and "lacks" in last
    assert not (tmp_path / "out").exists()


def test_plain_vocab_token_is_registered_special(tmp_path, run_cli, instruct):
    from transformers import AutoTokenizer

    target = make(tmp_path, "target", words=[*DEFAULT_WORDS, *HEADER_TOKENS])  # ordinary words, not special
    status, out, err = run_cli("graft", target, "--delta", target, target, "-o", tmp_path / "out",
                               "--chat-template-from", instruct, "--json")
    assert status == 0, err
    assert set(json.loads(out)["chat_template"]["registered_as_special"]) == set(HEADER_TOKENS)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert "<|eot_id|>" in tokenizer.all_special_tokens or "<|eot_id|>" in [
        t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
