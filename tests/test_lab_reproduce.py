"""`lab build` with the shipped seed reproduces the shipped checkpoints (slow: a full build)."""

from __future__ import annotations

import json

import pytest

from skillgraft.lab.demo import SHIPPED, shipped_available, shipped_seed

# Across CPUs and torch builds float reductions may differ (the kernel pin caps them at AVX2,
# not other libraries' choices), so the check allows a small drift and no more.
ATOL = 1e-4


@pytest.mark.slow
@pytest.mark.skipif(not shipped_available(), reason="shipped lab checkpoints missing")
def test_lab_build_reproduces_shipped_checkpoints(tmp_path):
    import torch
    from safetensors.torch import load_file

    from skillgraft.lab.build import MODELS, build

    seed = shipped_seed()
    record = build(tmp_path / "lab", seed, quiet=True)
    shipped_record = json.loads((SHIPPED / "lab.json").read_text())
    assert record["reliability"] == shipped_record["reliability"]
    for name in MODELS:
        ours = load_file(tmp_path / "lab" / name / "model.safetensors")
        theirs = load_file(SHIPPED / name / "model.safetensors")
        assert ours.keys() == theirs.keys()
        for key in theirs:
            torch.testing.assert_close(ours[key], theirs[key], atol=ATOL, rtol=0)
