"""Streaming in blocks gives the same bits as whole-tensor arithmetic: the kernels across
chunks, the reader, writer and pipeline on pieces, and whole commands with blocks shrunk to
a few entries, so every tensor of a tiny model spans many blocks."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from skillgraft.checkpoint import Checkpoint, PlannedTensor, ShardedWriter
from skillgraft.errors import UserError
from skillgraft.vectors import arithmetic as A
from skillgraft.vectors import streaming
from test_graft import reference_graft, state

SIZE = 3 * A.CHUNK + 17  # several chunks and a ragged tail
TINY_BLOCK = 7  # float32 entries per block: a row of a tiny model is one block, its 1-D tensors several


def rand(seed: int, dtype: torch.dtype, shape=(SIZE,)) -> torch.Tensor:
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.02).to(dtype)


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The raw bytes, so -0.0 and +0.0 (equal for torch.equal) count as different."""
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def shrink_blocks(monkeypatch) -> list[int]:
    """Blocks of TINY_BLOCK entries, chunks of 3; returns a list that counts written pieces."""
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 4 * TINY_BLOCK)
    monkeypatch.setattr(A, "CHUNK", 3)
    pieces = [0]
    write = ShardedWriter.write

    def counting(self, name, data):
        pieces[0] += 1
        return write(self, name, data)

    monkeypatch.setattr(ShardedWriter, "write", counting)
    return pieces


def weight_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.safetensors*"))}


def same_in_blocks(run_cli, monkeypatch, out: Path, *args) -> Path:
    """Run a command with default blocks (a tiny model's tensors fit one), then with tiny
    blocks: the weight files must be byte-identical, and written in many pieces."""
    status, _, err = run_cli(*args, "-o", out / "whole", "--quiet")
    assert status == 0, err
    pieces = shrink_blocks(monkeypatch)
    status, _, err = run_cli(*args, "-o", out / "blocks", "--quiet")
    assert status == 0, err
    assert weight_files(out / "blocks") == weight_files(out / "whole")
    assert pieces[0] > 2 * len(state(out / "blocks"))
    return out / "blocks"


# -- kernels ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_combine_blockwise_equals_full_tensor_arithmetic(dtype):
    target, base, skilled = rand(1, dtype), rand(2, dtype), rand(3, dtype)
    vector = rand(4, torch.float32)
    delta = skilled.float() - base.float()
    expected = (target.float() + 0.7 * vector + -1.5 * delta + delta).to(dtype)
    target_copy, vector_copy = target.clone(), vector.clone()
    got, finite = A.combine_blockwise([(target, None, 1.0), (vector, None, 0.7), (base, skilled, -1.5),
                                       (base, skilled, 1.0)], dtype)
    assert finite and got.dtype == dtype and torch.equal(bits(got), bits(expected))
    assert torch.equal(target, target_copy) and torch.equal(vector, vector_copy)  # inputs untouched


def test_combine_blockwise_starts_from_a_scaled_first_part():
    """vector combine/negate: the sum starts from scale·first, so -0.0 (a zero scaled by a
    negative number) survives where starting from 0.0 would turn it into +0.0."""
    first, second = rand(5, torch.float32), rand(6, torch.bfloat16)
    first[:10], second[:10] = 0.0, 0.0
    got, finite = A.combine_blockwise([(first, None, -0.5), (second, None, -2.0)], torch.float32)
    expected = -0.5 * first + -2.0 * second.float()
    assert finite and torch.equal(bits(got), bits(expected)) and torch.signbit(got[:10]).all()


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_extract_is_one_pair_part(out_dtype):
    base, skilled = rand(5, torch.bfloat16), rand(6, torch.bfloat16)
    got, finite = A.combine_blockwise([(base, skilled, 1.0)], out_dtype)
    assert finite and torch.equal(bits(got), bits(A.delta(base, skilled).to(out_dtype)))


def test_combine_blockwise_flags_nonfinite_after_the_cast():
    target = rand(1, torch.bfloat16)
    vector = torch.zeros(SIZE)
    vector[-1] = float("nan")
    _, finite = A.combine_blockwise([(target, None, 1.0), (vector, None, 1.0)], torch.bfloat16)
    assert not finite
    huge = torch.full((SIZE,), 60000.0, dtype=torch.float16)  # fits fp16, doubled it does not
    _, finite = A.combine_blockwise([(huge, None, 1.0), (huge, None, 1.0)], torch.float16)
    assert not finite
    _, finite = A.combine_blockwise([(huge, None, 1.0), (huge, None, 1.0)], torch.float32)
    assert finite


def test_blocks_are_whole_rows(monkeypatch):
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 4 * 10)
    assert list(streaming.blocks((5, 4))) == [(0, 8), (8, 16), (16, 20)]
    assert list(streaming.blocks((3, 12))) == [(0, 12), (12, 24), (24, 36)]  # a row wider than a block
    assert list(streaming.blocks((23,))) == [(0, 10), (10, 20), (20, 23)]
    assert list(streaming.blocks(())) == [(0, 1)]
    assert list(streaming.blocks((0, 4))) == [(0, 0)]


# -- reader, writer, pipeline ----------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["safetensors", "pickle"])
def test_partial_reads_equal_slices_of_whole_reads(tmp_path, layout):
    tensors = {"w": rand(1, torch.bfloat16, (9, 5)), "v": rand(2, torch.float32, (7,)),
               "s": torch.tensor(3.5, dtype=torch.float16), "i": torch.arange(12, dtype=torch.int64)}
    (tmp_path / "config.json").write_text("{}")
    if layout == "safetensors":
        save_file(tensors, tmp_path / "model.safetensors")
    else:
        torch.save(tensors, tmp_path / "pytorch_model.bin")
    checkpoint = Checkpoint(tmp_path, allow_pickle=True)
    whole = checkpoint.read("w")
    assert torch.equal(checkpoint.read_entries("w", 7, 23), whole.reshape(-1)[7:23])
    ids = torch.tensor([4, 0, 1, 2, 4, 8, 7])  # runs, a repeat, any order
    assert torch.equal(checkpoint.read_rows("w", ids), whole[ids])
    assert checkpoint.read_rows("w", torch.tensor([], dtype=torch.long)).shape == (0, 5)
    assert torch.equal(checkpoint.read_rows("v", torch.tensor([6, 2])), tensors["v"][[6, 2]])
    assert torch.equal(checkpoint.read_entries("s", 0, 1), tensors["s"].reshape(1))
    raw = bytes(checkpoint.read_raw("i"))
    assert raw == tensors["i"].numpy().tobytes() and bytes(checkpoint.read_raw("i", 3, 50)) == raw[3:50]
    checkpoint.read("v").mul_(0)  # the caller owns what it reads, even from a cached pickle
    assert torch.equal(checkpoint.read("v"), tensors["v"])


def test_writer_takes_a_tensor_in_pieces(tmp_path):
    tensor = rand(1, torch.bfloat16, (6, 4))
    plan = [PlannedTensor("a", "BF16", (6, 4)), PlannedTensor("e", "F32", (0,)), PlannedTensor("b", "F32", ())]
    writer = ShardedWriter(tmp_path, plan)
    assert [writer.write("a", tensor[:1]), writer.write("a", tensor[1:5]), writer.write("a", tensor[5:])] == \
        [False, False, True]
    assert writer.write("e", b"")
    with pytest.raises(RuntimeError, match="8 bytes, planned 4"):
        writer.write("b", torch.zeros(2))
    writer.write("b", torch.tensor(2.5))
    writer.close()
    got = state(tmp_path)
    assert torch.equal(got["a"], tensor) and got["e"].shape == (0,) and float(got["b"]) == 2.5
    short = ShardedWriter(tmp_path / "x", plan)
    (tmp_path / "x").mkdir()
    short.write("a", tensor[:2])
    with pytest.raises(RuntimeError, match="'a' was fully written"):
        short.close()
    short.abort()


class Progress:
    def advance(self, nbytes: int) -> None:
        pass


def test_pipeline_holds_a_bounded_number_of_pieces(tmp_path):
    plan = [PlannedTensor(f"t{i}", "F32", (40,)) for i in range(3)]
    in_flight, worst = [0], [0]

    def produce(planned):
        for start in range(0, 40, 4):
            in_flight[0] += 1
            worst[0] = max(worst[0], in_flight[0])
            yield torch.full((4,), float(start))

    class Slow(ShardedWriter):
        def write(self, name, data):
            in_flight[0] -= 1
            return super().write(name, data)

    streaming.stream_tensors(plan, produce, Slow(tmp_path, plan), Progress(), lambda name: 0, depth=2)
    assert worst[0] <= 2 + 2  # the queue, plus one piece being written and one being offered
    assert torch.equal(state(tmp_path)["t1"][36:], torch.full((4,), 36.0))


def test_pipeline_errors_stop_both_sides(tmp_path):
    plan = [PlannedTensor(f"t{i}", "F32", (8,)) for i in range(50)]

    def failing(planned):
        yield torch.zeros(4)
        raise UserError(f"bad input at {planned.name}")

    (tmp_path / "a").mkdir()
    with pytest.raises(UserError, match="bad input at t0"):
        streaming.stream_tensors(plan, failing, ShardedWriter(tmp_path / "a", plan), Progress(), lambda n: 0)

    class Full(ShardedWriter):
        def write(self, name, data):
            raise OSError(28, "No space left on device")

    def endless(planned):
        while True:
            yield torch.zeros(1)

    (tmp_path / "b").mkdir()
    with pytest.raises(OSError):
        streaming.stream_tensors(plan, endless, Full(tmp_path / "b", plan), Progress(), lambda n: 0)
    assert not [t for t in threading.enumerate() if t.name == "skillgraft-read"]  # the worker stopped


# -- whole commands in tiny blocks -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_graft_vectors_and_deltas_in_blocks(model_trio, run_cli, tmp_path, monkeypatch, dtype):
    trio = model_trio("llama", dtype)
    assert run_cli("extract", trio["base"], trio["skilled"], "-o", tmp_path / "v1", "--quiet")[0] == 0
    assert run_cli("extract", trio["base"], trio["skilled2"], "-o", tmp_path / "v2", "--dtype", "bfloat16",
                   "--quiet")[0] == 0
    out = same_in_blocks(run_cli, monkeypatch, tmp_path, "graft", trio["cp"], f"{tmp_path / 'v1'}:0.75",
                         f"{tmp_path / 'v2'}:-0.5", "--delta", trio["base"], f"{trio['skilled']}:1.5",
                         "--with-embeddings", "--shard-size", "30KB")
    base, skilled = state(trio["base"]), state(trio["skilled"])
    pair = {name: skilled[name].float() - base[name].float() for name in base}
    expected = reference_graft(trio["cp"], [(state(tmp_path / "v1"), 0.75), (state(tmp_path / "v2"), -0.5),
                                            (pair, 1.5)])
    got = state(out)
    assert all(torch.equal(bits(got[name]), bits(expected[name])) for name in expected)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_extract_in_blocks(model_trio, run_cli, tmp_path, monkeypatch, dtype):
    trio = model_trio("qwen2", "bfloat16")
    out = same_in_blocks(run_cli, monkeypatch, tmp_path, "extract", trio["base"], trio["skilled"], "--dtype", dtype)
    base, skilled, got = state(trio["base"]), state(trio["skilled"]), state(out)
    assert all(torch.equal(bits(got[n]), bits((skilled[n].float() - base[n].float()).to(getattr(torch, dtype))))
               for n in base)


def test_vector_combine_in_blocks(model_trio, run_cli, tmp_path, monkeypatch):
    trio = model_trio("gpt2", "float32")
    assert run_cli("extract", trio["base"], trio["skilled"], "-o", tmp_path / "v1", "--quiet")[0] == 0
    assert run_cli("extract", trio["base"], trio["skilled2"], "-o", tmp_path / "part", "--include", r"\.1\.",
                   "--quiet")[0] == 0
    out = same_in_blocks(run_cli, monkeypatch, tmp_path, "vector", "combine", f"{tmp_path / 'v1'}:-0.5",
                         f"{tmp_path / 'part'}:2", "--dtype", "bfloat16")
    v1, part, got = state(tmp_path / "v1"), state(tmp_path / "part"), state(out)
    for name, tensor in v1.items():
        expected = -0.5 * tensor + 2 * part[name] if name in part else -0.5 * tensor
        assert torch.equal(bits(got[name]), bits(expected.to(torch.bfloat16)))


def odd_folder(root: Path, name: str, scale: float) -> Path:
    """0-dim, 1-D, empty and integer tensors, bf16 / fp16 / fp32, in two shards."""
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 1}))
    tensors = {"model.scale": torch.tensor(1.5) + scale, "model.norm.weight": rand(1, torch.float16, (23,)) + 1 + scale,
               "model.layers.0.w": (rand(2, torch.float32, (5, 9)) + scale).to(torch.bfloat16),
               "model.empty": torch.zeros(0, 4), "model.position_ids": torch.arange(40, dtype=torch.int64)}
    save_file(dict(list(tensors.items())[:2]), folder / "model-00001-of-00002.safetensors")
    save_file(dict(list(tensors.items())[2:]), folder / "model-00002-of-00002.safetensors")
    weight_map = {n: f"model-0000{1 + (i >= 2)}-of-00002.safetensors" for i, n in enumerate(tensors)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


def test_odd_tensors_in_blocks(run_cli, tmp_path, monkeypatch):
    base, skilled, target = (odd_folder(tmp_path, n, s) for n, s in (("base", 0.0), ("skilled", 0.25), ("t", 0.5)))
    out = same_in_blocks(run_cli, monkeypatch, tmp_path, "graft", target, "--delta", base, f"{skilled}:-2")
    b, s, t, got = state(base), state(skilled), state(target), state(out)
    for name in ("model.scale", "model.norm.weight", "model.layers.0.w"):
        expected = (t[name].float() + -2 * (s[name].float() - b[name].float())).to(t[name].dtype)
        assert got[name].shape == t[name].shape and torch.equal(bits(got[name]), bits(expected))
    assert got["model.empty"].shape == (0, 4) and torch.equal(got["model.position_ids"], t["model.position_ids"])


def fp16_folder(root: Path, name: str, rows: dict[int, float], dtype=torch.float16) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 1}))
    weight = torch.zeros(10, 8)
    for row, value in rows.items():
        weight[row] = value
    save_file({"model.layers.0.w": weight.to(dtype)}, folder / "model.safetensors")
    return folder


@pytest.mark.parametrize("command", ["graft", "extract", "combine"])
def test_fp16_overflow_after_the_cast_is_refused_in_any_block(run_cli, tmp_path, monkeypatch, command):
    """Rows 5 and 8 (two middle blocks) leave fp16's range only when cast: float32 is finite."""
    shrink_blocks(monkeypatch)
    base = fp16_folder(tmp_path, "base", {})
    skilled = fp16_folder(tmp_path, "skilled", {5: 40000.0, 8: 40000.0}, torch.float32)
    if command == "graft":
        args = ["graft", fp16_folder(tmp_path, "target", {5: 30000.0, 8: 30000.0}), "--delta", base, skilled]
    elif command == "extract":
        args = ["extract", base, fp16_folder(tmp_path, "big", {5: 70000.0, 8: 70000.0}, torch.float32),
                "--dtype", "float16"]
    else:
        assert run_cli("extract", base, skilled, "-o", tmp_path / "vec", "--quiet")[0] == 0
        args = ["vector", "combine", f"{tmp_path / 'vec'}:2", "--dtype", "float16"]
    status, _, err = run_cli(*args, "-o", tmp_path / "out")
    assert status == 2 and "'model.layers.0.w' would hold 16 NaN/Inf values" in err and "--allow-nonfinite" in err
    assert not (tmp_path / "out").exists()
    status, _, err = run_cli(*args, "-o", tmp_path / "out", "--allow-nonfinite", "--quiet")
    assert status == 0, err
    got = state(tmp_path / "out")["model.layers.0.w"]
    assert torch.isinf(got[5]).all() and torch.isinf(got[8]).all() and torch.isfinite(got[:5]).all()
