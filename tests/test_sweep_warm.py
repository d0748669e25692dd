"""Graft trials in memory: the warm target holds exactly the bits `skillgraft graft` writes,
trial after trial, and a worker loads its target once."""

from __future__ import annotations

import json

import pytest
import torch

from sweep_helpers import write_sweep


def _state(model) -> dict:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_in_memory_grafts_equal_the_written_folders_bit_for_bit(model_trio, tmp_path, dtype):
    """sum, ties, dare_ties with a seed, per-layer scales and an include pattern, one after the
    other on one loaded target: each equals `graft` to a folder, loaded back."""
    from skillgraft.evaluate.backends.hf import load_pretrained
    from skillgraft.vectors import extract, graft
    from skillgraft.vectors.driver import plan_graft
    from skillgraft.vectors.memory import graft_in_memory
    from skillgraft.vectors.schedule import build_schedule

    trio = model_trio("llama", dtype)
    extract(trio["base"], trio["skilled"], tmp_path / "v1")
    extract(trio["base"], trio["skilled2"], tmp_path / "v2")
    model, _ = load_pretrained(str(trio["cp"]))
    state, dirty = model.state_dict(), set()
    untouched = _state(model)
    two = [(tmp_path / "v1", 0.8), (tmp_path / "v2", 0.6)]
    cases = [
        {"sources": two},
        {"sources": two, "method": "ties", "density": 0.5},
        {"sources": two, "method": "dare_ties", "density": 0.4, "seed": 7},
        {"sources": [(tmp_path / "v1", 1.0)], "schedule": build_schedule(["0-0=0.25"], [], None)},
        {"sources": [(trio["base"], trio["skilled"], 1.5)], "include": ["mlp"]},
        {"sources": [(tmp_path / "v2", 1.0)], "include": ["q_proj"]},
    ]
    for number, options in enumerate(cases):
        out = tmp_path / f"out{number}"
        plan = plan_graft(trio["cp"], out, **options)
        dirty = graft_in_memory(plan, state, dirty)
        graft(trio["cp"], out, **options)
        written, _ = load_pretrained(str(out))
        expected = written.state_dict()
        assert set(expected) == set(state)
        for name in expected:
            assert torch.equal(state[name], expected[name]), (number, name)
        changed = {n for n in state if not torch.equal(state[n], untouched[n])}
        assert changed and changed <= set(plan.work), number   # what the last trial left is restored


def test_a_sweep_worker_loads_its_target_once_and_writes_only_the_kept_folder(run_cli, tmp_path):
    from skillgraft.sweep import warm

    warm._WARM.clear()
    before = warm.LOADS["count"]
    path = write_sweep(tmp_path / "s.yaml")
    status, out, err = run_cli("sweep", "run", path, "-o", tmp_path / "run", "--n-trials", "5", "--json")
    assert status == 0, err[-2000:]
    assert warm.LOADS["count"] - before == 1
    (best,) = json.loads(out)["best"]
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "run" / "trials").glob("*/result.json"))]
    assert all(r["in_memory"] for r in results) and len(results) == 5
    kept = sorted(p.parent.name for p in (tmp_path / "run" / "trials").glob("*/output"))
    assert kept == [f"{best['number']:04d}"]
    # the kept folder is the recipe's own graft: rebuilding it gives the same files
    trial = tmp_path / "run" / "trials" / f"{best['number']:04d}"
    assert run_cli("run", trial / "recipe.yaml", "-o", tmp_path / "rebuilt", "--quiet")[0] == 0
    ours = json.loads((trial / "output" / "skillgraft.json").read_text())["files"]
    theirs = json.loads((tmp_path / "rebuilt" / "skillgraft.json").read_text())["files"]
    assert {k: v for k, v in ours.items() if k.endswith(".safetensors")} == \
        {k: v for k, v in theirs.items() if k.endswith(".safetensors")}


def test_the_warm_target_is_keyed_by_content_not_by_path(model_trio, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from skillgraft.sweep import warm

    base = model_trio("llama", "float32")["base"]
    first = tmp_path / "first"
    shutil.copytree(base, first)
    before = warm.LOADS["count"]
    warm.warm_target(first)
    warm.warm_target(first)
    same = tmp_path / "same-content-elsewhere"
    shutil.copytree(first, same)
    assert warm.warm_target(same).key == warm.warm_target(first).key
    assert warm.LOADS["count"] == before + 1   # one load for two trials and a copy of the same model
    shard = sorted(same.glob("*.safetensors"))[0]
    tensors = load_file(shard)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, shard, metadata={"format": "pt"})
    warm.warm_target(same)
    assert warm.LOADS["count"] == before + 2   # changed weights: loaded again
