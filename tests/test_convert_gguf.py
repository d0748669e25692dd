"""`skillgraft convert gguf`: checked against transformers' own GGUF loading on small GGUF
files written here with the `gguf` package (no download)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from test_bad_input import expect_error

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
HIDDEN, LAYERS, HEADS, KV_HEADS, FF = 64, 2, 4, 2, 128


def _vocab() -> tuple[list[str], list[int], list[str]]:
    """A byte-level BPE vocabulary: the 256 byte symbols, a few merges, three control tokens."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = list(bytes_to_unicode().values())
    merges = ["h e", "Ġ t", "Ġt he", "l l", "o r"]
    tokens += [m.replace(" ", "") for m in merges]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [gguf.TokenType.NORMAL] * len(tokens) + [gguf.TokenType.CONTROL] * len(specials)
    return tokens + specials, [int(t) for t in types], merges


def write_gguf(path: Path, *, arch: str = "llama", quantize: bool = False, tied: bool = True) -> Path:
    """A 2-layer Llama-shaped GGUF with random weights, a tokenizer and a ChatML template."""
    rng = np.random.default_rng(0)
    tokens, types, merges = _vocab()
    head_dim = HIDDEN // HEADS
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name("tiny test model")
    writer.add_block_count(LAYERS)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FF)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantize else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|im_start|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_chat_template(CHATML)

    def tensor(name: str, *shape: int) -> None:
        values = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        if name.endswith("norm.weight"):
            values = 1.0 + values
        if quantize and len(shape) == 2:
            kind = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(values, kind), raw_dtype=kind)
        else:
            writer.add_tensor(name, values)

    tensor("token_embd.weight", len(tokens), HIDDEN)
    for i in range(LAYERS):
        tensor(f"blk.{i}.attn_norm.weight", HIDDEN)
        tensor(f"blk.{i}.attn_q.weight", HEADS * head_dim, HIDDEN)
        tensor(f"blk.{i}.attn_k.weight", KV_HEADS * head_dim, HIDDEN)
        tensor(f"blk.{i}.attn_v.weight", KV_HEADS * head_dim, HIDDEN)
        tensor(f"blk.{i}.attn_output.weight", HIDDEN, HIDDEN)
        tensor(f"blk.{i}.ffn_norm.weight", HIDDEN)
        tensor(f"blk.{i}.ffn_gate.weight", FF, HIDDEN)
        tensor(f"blk.{i}.ffn_up.weight", FF, HIDDEN)
        tensor(f"blk.{i}.ffn_down.weight", HIDDEN, FF)
    tensor("output_norm.weight", HIDDEN)
    if not tied:
        tensor("output.weight", len(tokens), HIDDEN)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def reference(path: Path, dtype: str):
    """What transformers itself builds from the GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=getattr(torch, dtype))
    return model, tokenizer


@pytest.mark.parametrize("quantize,tied,dtype", [(False, True, "float32"), (True, False, "float32"),
                                                 (True, True, "bfloat16")])
def test_converted_folder_equals_transformers_gguf_load(run_cli, tmp_path, quantize, tied, dtype):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = write_gguf(tmp_path / "tiny.gguf", quantize=quantize, tied=tied)
    out = tmp_path / "converted"
    status, stdout, err = run_cli("convert", "gguf", source, "-o", out, "--dtype", dtype, "--json")
    assert status == 0, err
    result = json.loads(stdout)

    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["tie_word_embeddings"] is tied
    model = AutoModelForCausalLM.from_pretrained(out)   # the folder alone, no gguf_file
    tokenizer = AutoTokenizer.from_pretrained(out)
    ref_model, ref_tokenizer = reference(source, dtype)
    ours, theirs = model.state_dict(), ref_model.state_dict()
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        assert ours[name].dtype == getattr(torch, dtype), name
        assert torch.equal(ours[name], theirs[name]), name
    if quantize:   # every matrix was stored as Q8_0: embeddings, 7 per layer, the untied head
        assert result["inputs"][0]["tensor_types"] == {"F32": 2 * LAYERS + 1, "Q8_0": 1 + 7 * LAYERS + (not tied)}

    text = "hello the world<|im_end|>"
    assert tokenizer(text)["input_ids"] == ref_tokenizer(text)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"]) == [
        "he", "ll", "o", "Ġthe", "Ġ", "w", "or", "l", "d", "<|im_end|>"]
    chat = [{"role": "user", "content": "hello"}]
    assert tokenizer.chat_template == CHATML
    assert (tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref_model(ids).logits)

    manifest = json.loads((out / "skillgraft.json").read_text())
    assert manifest["kind"] == "model"
    record = manifest["inputs"][0]
    assert record["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["quantization"] == ("MOSTLY_Q8_0" if quantize else "ALL_F32")
    assert record["architecture"] == "llama"
    assert manifest["options"]["dtype"] == dtype
    assert set(manifest["files"]) == {p.name for p in out.iterdir()} - {"skillgraft.json"}
    status, _, err = run_cli("verify", out)
    assert status == 0, err
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {p.name: 0o644 for p in out.iterdir()}
    assert "\n# converted\n" in (out / "README.md").read_text()   # the published name, not the temporary one


def test_bad_inputs_are_one_error_line_and_publish_nothing(run_cli, tmp_path):
    good = write_gguf(tmp_path / "good.gguf")
    out = tmp_path / "out"

    expect_error(run_cli, ["convert", "gguf", tmp_path / "missing.gguf", "-o", out], "missing.gguf", "no such file",
                  out=out)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size - 5000])
    expect_error(run_cli, ["convert", "gguf", truncated, "-o", out], "truncated.gguf", "not a readable GGUF", out=out)
    text = tmp_path / "notes.gguf"
    text.write_text("not a model\n")
    expect_error(run_cli, ["convert", "gguf", text, "-o", out], "notes.gguf", "not a readable GGUF", out=out)
    foreign = write_gguf(tmp_path / "foreign.gguf", arch="notanarch")
    expect_error(run_cli, ["convert", "gguf", foreign, "-o", out], "foreign.gguf", "'notanarch'", "llama", out=out)
    expect_error(run_cli, ["convert", "gguf", good, "-o", out, "--dtype", "float16"], "--dtype", out=out)
    assert not out.exists()

    out.mkdir()
    (out / "keep.txt").write_text("mine")
    expect_error(run_cli, ["convert", "gguf", good, "-o", out], "not empty", "--force")
    assert not list(tmp_path.glob(".out.partial-*"))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("failure", [AssertionError("block size mismatch"), RuntimeError("bad quant data"),
                                     MemoryError()])
def test_a_dequantisation_failure_is_one_error_line(run_cli, tmp_path, monkeypatch, failure):
    """gguf's dequantiser fails inside transformers' loader (damaged blocks, a machine out of
    memory): one `error:` line naming the file, nothing published."""
    good = write_gguf(tmp_path / "good.gguf", quantize=True)

    def broken(*args, **kwargs):
        raise failure

    monkeypatch.setattr(gguf, "dequantize", broken)
    out = tmp_path / "out"
    needles = ["not enough memory", "dequantised in memory"] if isinstance(failure, MemoryError) else \
        ["transformers cannot load this GGUF", type(failure).__name__, str(failure)]
    expect_error(run_cli, ["convert", "gguf", good, "-o", out], "good.gguf", *needles, out=out)
    assert not list(tmp_path.glob(".out*"))
