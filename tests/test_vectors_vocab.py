"""Vocabulary-aware transfer: embedding/head rows matched by token string on an extended,
renumbered vocabulary; untrained chat-token rows taken from the chat model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_blockwise import same_in_blocks
from tiny_models import DEFAULT_WORDS, build_tiny_model, build_tokenizer, perturb_model
from test_graft import state

NEW_WORDS = ["sushi", "ramen", "東京"]
EMBEDDINGS = ("model.embed_tokens.weight", "lm_head.weight")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab")
    base_tok = build_tokenizer(DEFAULT_WORDS)
    base = build_tiny_model(root / "base", seed=0, tokenizer=base_tok)
    perturb_model(base, root / "chat", seed=1, scale=0.02)
    # the target puts new words first, so every shared token has another id there
    target_tok = build_tokenizer([*NEW_WORDS, *DEFAULT_WORDS])
    target = build_tiny_model(root / "target", seed=5, tokenizer=target_tok)
    weights = load_file(target / "model.safetensors")
    im_end = target_tok.convert_tokens_to_ids("<|im_end|>")
    for name in EMBEDDINGS:  # a chat token the target has but never trained
        weights[name][im_end] = 0.0
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    return root, base_tok.get_vocab(), target_tok.get_vocab()


def test_rows_mapped_by_token_and_chat_rows_copied(models, run_cli, tmp_path):
    root, base_vocab, target_vocab = models
    status, out, err = run_cli("graft", root / "target", "--delta", root / "base", root / "chat", "-o",
                               tmp_path / "out", "--with-embeddings", "--json")
    assert status == 0, err
    report = json.loads(out)["vocab_alignment"][0]
    assert report["shared"] == len(base_vocab) and report["target_only"] == len(NEW_WORDS)
    assert report["vector_only"] == 0 and set(report["tensors"]) == set(EMBEDDINGS)
    assert sorted(report["special_copied"]) == sorted(f"{n}: <|im_end|>" for n in EMBEDDINGS)
    base, chat, target = (state(root / x) for x in ("base", "chat", "target"))
    got = state(tmp_path / "out")
    for name in EMBEDDINGS:
        for token, base_id in base_vocab.items():
            tid = target_vocab[token]
            if token == "<|im_end|>":  # untrained in the target: the chat model's row, not base + delta
                assert torch.equal(got[name][tid], chat[name][base_id])
                continue
            expected = target[name][tid] + (chat[name][base_id] - base[name][base_id])
            assert torch.equal(got[name][tid], expected), (name, token)
        for token in NEW_WORDS:  # rows of new tokens stay as they were
            assert torch.equal(got[name][target_vocab[token]], target[name][target_vocab[token]])
    # the blocks themselves are grafted as usual
    layer = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(got[layer], target[layer] + (chat[layer] - base[layer]))


def test_scaled_copy_and_saved_vector(models, run_cli, tmp_path):
    root, base_vocab, target_vocab = models
    assert run_cli("graft", root / "target", "--delta", root / "base", f"{root / 'chat'}:0.5", "-o",
                   tmp_path / "half", "--with-embeddings", "--quiet")[0] == 0
    chat, half = state(root / "chat"), state(tmp_path / "half")
    im_end = target_vocab["<|im_end|>"]
    for name in EMBEDDINGS:  # the target row was zero: half of the chat model's row
        assert torch.allclose(half[name][im_end], 0.5 * chat[name][base_vocab["<|im_end|>"]], atol=0, rtol=1e-6)
    # a saved vector has no chat model at hand: shared rows get the delta, nothing is copied
    assert run_cli("extract", root / "base", root / "chat", "-o", tmp_path / "vec", "--quiet")[0] == 0
    status, out, err = run_cli("graft", root / "target", tmp_path / "vec", "-o", tmp_path / "out",
                               "--with-embeddings", "--json")
    assert status == 0, err
    report = json.loads(out)["vocab_alignment"][0]
    assert report["special_copied"] == [] and report["shared"] == len(base_vocab)
    vec, target, got = state(tmp_path / "vec"), state(root / "target"), state(tmp_path / "out")
    word = target_vocab["capital"]
    assert word != base_vocab["capital"]
    assert torch.equal(got["lm_head.weight"][word], target["lm_head.weight"][word] +
                       vec["lm_head.weight"][base_vocab["capital"]])
    assert torch.equal(got["lm_head.weight"][target_vocab["<|im_end|>"]], vec["lm_head.weight"][base_vocab["<|im_end|>"]])




@pytest.mark.parametrize("extra", [[], ["--method", "ties", "--density", "0.5"]])
@pytest.mark.parametrize("scale", ["1", "0.5"])
def test_rows_matched_in_tiny_blocks_equal_whole_blocks(models, run_cli, tmp_path, monkeypatch, scale, extra):
    """Target rows a block at a time, each reading only the chat/base rows it needs; the
    untrained rows' threshold from norms read block by block: the same bytes as one block."""
    root, _, _ = models
    out = same_in_blocks(run_cli, monkeypatch, tmp_path, "graft", root / "target", "--delta", root / "base",
                         f"{root / 'chat'}:{scale}", "--with-embeddings", *extra)
    report = json.loads((out / "skillgraft.json").read_text())["vocab_alignment"][0]
    assert sorted(report["special_copied"]) == sorted(f"{n}: <|im_end|>" for n in EMBEDDINGS)
