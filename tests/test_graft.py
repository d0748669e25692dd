"""Extract/graft arithmetic against the seeds' straightforward in-memory loop, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from skillgraft.checkpoint import Checkpoint

EMBEDDINGS = {"llama": {"model.embed_tokens.weight", "lm_head.weight"},
              "qwen2": {"model.embed_tokens.weight", "lm_head.weight"},
              "mistral": {"model.embed_tokens.weight", "lm_head.weight"},
              "gpt2": {"transformer.wte.weight"}}


def state(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a folder, loaded whole with the reference safetensors library."""
    tensors = {}
    for shard in sorted(Path(folder).glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def reference_graft(target: Path, vectors: list[tuple[dict, float]], skip=lambda name: False) -> dict:
    """The seeds' loop: for every target tensor, add each vector's scaled delta in float32."""
    out = {}
    for name, tensor in state(target).items():
        parts = [(v[name], s) for v, s in vectors if name in v and v[name].shape == tensor.shape]
        if skip(name) or not parts or not tensor.is_floating_point():
            out[name] = tensor
            continue
        total = tensor.float()
        for vector, scale in parts:
            total = total + scale * vector.float()
        out[name] = total.to(tensor.dtype)
    return out


def assert_same(folder: Path, expected: dict[str, torch.Tensor]) -> None:
    got = state(folder)
    assert set(got) == set(expected)
    differing = [name for name in expected if not torch.equal(got[name], expected[name])]
    assert differing == [], f"{len(differing)} tensors differ, e.g. {differing[:3]}"
    assert all(got[n].dtype == expected[n].dtype for n in expected)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_round_trip_is_bit_exact(model_trio, run_cli, tmp_path, dtype):
    trio = model_trio("llama", dtype)
    status, _, err = run_cli("extract", trio["base"], trio["skilled"], "-o", tmp_path / "vec", "--quiet")
    assert status == 0, err
    assert Checkpoint(tmp_path / "vec").tensors["model.layers.0.mlp.up_proj.weight"].dtype == "F32"
    status, _, err = run_cli("graft", trio["base"], tmp_path / "vec", "-o", tmp_path / "out", "--with-embeddings",
                             "--quiet")
    assert status == 0, err
    assert_same(tmp_path / "out", state(trio["skilled"]))


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "mistral"])
def test_graft_matches_reference_loop(model_trio, run_cli, tmp_path, family):
    trio = model_trio(family, "bfloat16")
    for name, skilled in (("v1", trio["skilled"]), ("v2", trio["skilled2"])):
        status, _, err = run_cli("extract", trio["base"], skilled, "-o", tmp_path / name, "--quiet")
        assert status == 0, err
    status, out, err = run_cli("graft", trio["cp"], f"{tmp_path / 'v1'}:0.75", f"{tmp_path / 'v2'}:-0.5",
                               "-o", tmp_path / "out", "--exclude", "norm", "--json")
    assert status == 0, err
    result = json.loads(out)
    vectors = [(state(tmp_path / "v1"), 0.75), (state(tmp_path / "v2"), -0.5)]
    skip = lambda name: name in EMBEDDINGS[family] or "norm" in name or name.startswith("transformer.ln_f")
    if family == "gpt2":  # GPT-2's norms are ln_1/ln_2/ln_f: "norm" does not match them
        skip = lambda name: name in EMBEDDINGS[family]
    expected = reference_graft(trio["cp"], vectors, skip)
    assert_same(tmp_path / "out", expected)
    changed = sum(not torch.equal(expected[n], t) for n, t in state(trio["cp"]).items())
    assert result["tensors"]["grafted"] == changed > 0
    kept = {e["tensor"] for e in result["skipped"] if "input_embeddings" in e["reason"] or "output_head" in e["reason"]}
    assert kept == EMBEDDINGS[family]


def test_one_pass_delta_equals_extract_then_graft(model_trio, run_cli, tmp_path):
    trio = model_trio("qwen2", "bfloat16")
    assert run_cli("extract", trio["base"], trio["skilled"], "-o", tmp_path / "vec", "--quiet")[0] == 0
    assert run_cli("graft", trio["cp"], f"{tmp_path / 'vec'}:1.5", "-o", tmp_path / "two", "--quiet")[0] == 0
    status, _, err = run_cli("graft", trio["cp"], "--delta", trio["base"], f"{trio['skilled']}:1.5",
                             "-o", tmp_path / "one", "--quiet")
    assert status == 0, err
    assert_same(tmp_path / "one", state(tmp_path / "two"))


def test_include_exclude_and_vector_dtype(model_trio, run_cli, tmp_path):
    trio = model_trio("llama", "float32")
    status, out, _ = run_cli("extract", trio["base"], trio["skilled"], "-o", tmp_path / "vec", "--include",
                             r"layers\.1\.", "--exclude", "mlp", "--dtype", "bfloat16", "--json")
    assert status == 0
    manifest = json.loads(out)
    written = Checkpoint(tmp_path / "vec").tensors
    assert written and all(".layers.1." in n and "mlp" not in n for n in written)
    assert {info.dtype for info in written.values()} == {"BF16"}
    assert manifest["tensors"]["written"] == len(written)
    base, skilled = state(trio["base"]), state(trio["skilled"])
    for name in written:
        expected = (skilled[name].float() - base[name].float()).to(torch.bfloat16)
        assert torch.equal(state(tmp_path / "vec")[name], expected)
    reasons = {e["tensor"]: e["reason"] for e in manifest["skipped"]}
    assert "excluded by --exclude 'mlp'" == reasons["model.layers.1.mlp.up_proj.weight"]
    assert reasons["model.layers.0.self_attn.q_proj.weight"] == "matches no --include"


def test_grafted_folder_loads_in_transformers_with_reference_logits(model_trio, run_cli, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trio = model_trio("llama", "bfloat16")
    assert run_cli("graft", trio["cp"], "--delta", trio["base"], trio["skilled"], "-o", tmp_path / "out",
                   "--shard-size", "30KB", "--quiet")[0] == 0
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "out").glob("model-*.safetensors"))) > 1
    vector = {n: skilled.float() - state(trio["base"])[n].float() for n, skilled in state(trio["skilled"]).items()}
    expected = reference_graft(trio["cp"], [(vector, 1.0)], lambda n: n in EMBEDDINGS["llama"])

    grafted = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    reference = AutoModelForCausalLM.from_pretrained(trio["cp"])
    reference.load_state_dict(expected)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    batch = tokenizer(["what is the capital of the country ?"], return_tensors="pt")
    with torch.no_grad():
        got, want = grafted(**batch).logits, reference(**batch).logits
    assert grafted.dtype == torch.bfloat16
    assert torch.equal(got, want)
    original = AutoModelForCausalLM.from_pretrained(trio["cp"])
    with torch.no_grad():
        assert not torch.equal(original(**batch).logits, got)  # the graft changed the model


def test_manifest_and_verify(model_trio, run_cli, tmp_path):
    trio = model_trio("gpt2", "float32")
    assert run_cli("extract", trio["base"], trio["skilled"], "-o", tmp_path / "vec", "--quiet")[0] == 0
    manifest = json.loads((tmp_path / "vec" / "skillgraft.json").read_text())
    assert manifest["kind"] == "vector"
    assert [i["role"] for i in manifest["inputs"]] == ["base", "skilled"]
    assert manifest["options"]["dtype"] == "float32"
    assert "model.safetensors" in manifest["files"] and "config.json" in manifest["files"]
    assert manifest["tokenizers"]["relation"] == "identical"
    status, out, _ = run_cli("verify", tmp_path / "vec", "--json")
    assert status == 0 and json.loads(out)["ok"] is True
    shard = tmp_path / "vec" / "model.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01
    shard.write_bytes(bytes(data))
    status, _, err = run_cli("verify", tmp_path / "vec")
    assert status == 2 and err.startswith("error:") and "model.safetensors (sha256 mismatch)" in err


def test_inspect_reports_vector_norms(model_trio, run_cli, tmp_path):
    trio = model_trio("llama", "float32")
    assert run_cli("extract", trio["base"], trio["skilled"], "-o", tmp_path / "vec", "--quiet")[0] == 0
    status, out, _ = run_cli("inspect", tmp_path / "vec", "--json")
    report = json.loads(out)
    assert status == 0 and report["kind"] == "vector"
    vector = state(tmp_path / "vec")
    layer1 = torch.cat([t.flatten() for n, t in vector.items() if ".layers.1." in n])
    assert report["norms"]["per_layer"]["1"] == pytest.approx(float(layer1.double().norm()), rel=1e-9)
    assert report["tensor_count"] == len(vector)
    assert report["parameters"] == sum(t.numel() for t in vector.values())
