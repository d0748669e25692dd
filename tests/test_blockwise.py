"""The blockwise kernels give the same bits as the plain full-tensor formulas, across blocks;
the reader and writer take tensors in pieces."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from skillgraft.checkpoint import Checkpoint, PlannedTensor, ShardedWriter
from skillgraft.vectors import arithmetic as A
from test_graft import state

SIZE = 3 * A.CHUNK + 17  # several blocks and a ragged tail


def rand(seed: int, dtype: torch.dtype, shape=(SIZE,)) -> torch.Tensor:
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.02).to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_combine_blockwise_equals_full_tensor_arithmetic(dtype):
    target, base, skilled = rand(1, dtype), rand(2, dtype), rand(3, dtype)
    vector = rand(4, torch.float32)
    expected = A.accumulate(target, [A.scaled(vector.clone(), 0.7), A.scaled(A.delta(base, skilled), -1.5),
                                     A.scaled(A.delta(base, skilled), 1.0)]).to(dtype)
    target_copy, vector_copy = target.clone(), vector.clone()
    got, finite = A.combine_blockwise(target, [(vector, None, 0.7), (base, skilled, -1.5), (base, skilled, 1.0)])
    assert finite and got.dtype == dtype and torch.equal(got, expected)
    assert torch.equal(target, target_copy) and torch.equal(vector, vector_copy)  # inputs untouched


def test_combine_blockwise_keeps_shape_and_flags_nonfinite():
    target = rand(1, torch.bfloat16, (A.CHUNK // 64, 130))
    vector = torch.zeros(target.shape)
    vector[-1, -1] = float("nan")
    got, finite = A.combine_blockwise(target, [(vector, None, 1.0)])
    assert got.shape == target.shape and not finite
    huge = torch.full((SIZE,), 60000.0, dtype=torch.float16)  # fits fp16, doubled it does not
    _, finite = A.combine_blockwise(huge, [(huge, None, 1.0)])
    assert not finite


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_delta_blockwise_equals_delta(out_dtype):
    base, skilled = rand(5, torch.bfloat16), rand(6, torch.bfloat16)
    got, finite = A.delta_blockwise(base, skilled, out_dtype)
    assert finite and torch.equal(got, A.delta(base, skilled).to(out_dtype))


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
