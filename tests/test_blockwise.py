"""The blockwise kernels give the same bits as the plain full-tensor formulas, across blocks."""

from __future__ import annotations

import pytest
import torch

from skillgraft.vectors import arithmetic as A

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
