"""`vector to-lora`: the adapter loads with peft and reproduces the delta within the reported error."""

from __future__ import annotations

import json
import math

import pytest
import torch

from test_graft import state


@pytest.fixture(scope="module")
def lora_vector(tmp_path_factory):
    """A float32 llama pair whose linear deltas have a known low-rank part plus small noise."""
    from safetensors.torch import load_file, save_file

    from skillgraft.cli import main
    from tiny_models import build_tiny_model, perturb_model

    root = tmp_path_factory.mktemp("lora")
    base = build_tiny_model(root / "base", seed=0, dtype="float32")
    skilled = perturb_model(base, root / "skilled", seed=1, scale=0.001)
    weights = load_file(skilled / "model.safetensors")
    gen = torch.Generator().manual_seed(0)
    for name, tensor in weights.items():
        if tensor.dim() == 2 and ".layers." in name:  # add a rank-2 signal on top of the noise
            u, v = torch.randn(tensor.shape[0], 2, generator=gen), torch.randn(2, tensor.shape[1], generator=gen)
            tensor += 0.01 * (u @ v)
    save_file(weights, str(skilled / "model.safetensors"), metadata={"format": "pt"})
    assert main(["extract", str(base), str(skilled), "-o", str(root / "vec"), "--quiet"]) == 0
    return root


def adapter_deltas(root, adapter):
    """Per linear weight: (merged model via peft − base), loaded the way a user would."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "base"), adapter)
    merged = model.merge_and_unload().state_dict()
    base = state(root / "base")
    return {n: merged[n] - base[n] for n in base if n in merged}


@pytest.mark.parametrize("args", [["--rank", "2"], ["--energy", "0.5"]])
def test_adapter_reproduces_delta_within_reported_error(lora_vector, run_cli, tmp_path, args):
    root = lora_vector
    status, out, err = run_cli("vector", "to-lora", root / "vec", "-o", tmp_path / "adapter", *args, "--json")
    assert status == 0, err
    result = json.loads(out)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file() and result["kind"] == "adapter"
    vector, got = state(root / "vec"), adapter_deltas(root, tmp_path / "adapter")
    modules = {m["module"]: m for m in result["modules"]}
    assert len(modules) == 14  # 7 linear weights × 2 layers
    for module, report in modules.items():
        name = module + ".weight"
        actual = float((vector[name] - got[name]).norm() / vector[name].norm())
        assert actual == pytest.approx(report["relative_error"], abs=1e-4), module
        if args[0] == "--rank":
            assert report["rank"] == 2 and report["relative_error"] < 0.5  # the rank-2 signal dominates
        else:  # the smallest rank keeping half the energy: error² ≤ 0.5
            assert report["relative_error"] ** 2 <= 0.5 + 1e-6 and report["rank"] >= 1
    untouched = [n for n in vector if "norm" in n or "embed" in n or "lm_head" in n]
    assert all(torch.count_nonzero(got[n]) == 0 for n in untouched)
    assert {e["tensor"] for e in result["left_out"]} == set(untouched)
    summary = result["lora"]
    linear = [m for m in modules.values()]
    expected = math.sqrt(sum((m["norm"] * m["relative_error"]) ** 2 for m in linear) / sum(m["norm"] ** 2 for m in linear))
    assert summary["relative_error_linear"] == pytest.approx(expected)
    assert summary["relative_error_all"] > summary["relative_error_linear"]  # norms/embeddings are left out


def test_full_rank_is_exact_and_switchable(lora_vector, run_cli, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root = lora_vector
    status, out, err = run_cli("vector", "to-lora", root / "vec", "-o", tmp_path / "adapter", "--rank", "64",
                               "--include", "mlp", "--json")
    assert status == 0, err
    result = json.loads(out)
    assert {m["module"].split(".")[-2] for m in result["modules"]} == {"mlp"}
    assert max(m["relative_error"] for m in result["modules"]) < 1e-6
    got, vector = adapter_deltas(root, tmp_path / "adapter"), state(root / "vec")
    assert all(torch.allclose(got[n], vector[n], atol=1e-6) for n in vector if ".mlp." in n)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "base"), tmp_path / "adapter")
    ids = torch.tensor([[2, 10, 11, 12]])
    with torch.no_grad():
        on = model(input_ids=ids).logits
        with model.disable_adapter():
            off = model(input_ids=ids).logits
    plain = AutoModelForCausalLM.from_pretrained(root / "base")
    with torch.no_grad():
        assert torch.allclose(off, plain(input_ids=ids).logits) and not torch.allclose(on, off)


@pytest.mark.parametrize("args,message", [
    ([], "exactly one of --rank"), (["--rank", "2", "--energy", "0.9"], "exactly one of --rank"),
    (["--rank", "0"], "at least 1"), (["--energy", "1.5"], "(0, 1]"),
    (["--rank", "2", "--include", "nothing-matches"], "to-lora would touch no tensor"),
])
def test_bad_to_lora_options(lora_vector, run_cli, tmp_path, args, message):
    status, _, err = run_cli("vector", "to-lora", lora_vector / "vec", "-o", tmp_path / "a", *args)
    assert status == 2 and err.startswith("error:") and message in err, err
    assert not (tmp_path / "a").exists()


def test_large_matrices_use_randomized_svd_with_measured_error():
    from skillgraft.vectors.lora import EXACT_SVD_MAX, factorize

    gen = torch.Generator().manual_seed(0)
    rows, cols = EXACT_SVD_MAX + 60, EXACT_SVD_MAX + 8
    delta = torch.randn(rows, 6, generator=gen) @ torch.randn(6, cols, generator=gen)
    delta += 0.05 * torch.randn(rows, cols, generator=gen)
    squares = torch.linalg.svdvals(delta).double().pow(2)
    for kwargs in ({"rank": 6}, {"energy": 0.9}):
        a, b, error, r = factorize(delta, **kwargs)
        assert error == pytest.approx(float((delta - b @ a).norm() / delta.norm()), rel=1e-4)
        best = math.sqrt(float(squares[r:].sum() / squares.sum()))
        assert error == pytest.approx(best, rel=1e-3)  # as good as the exact truncated SVD
        assert r == 6 or kwargs.get("energy")
    assert factorize(delta, energy=0.9)[3] == int((squares.cumsum(0) / squares.sum() < 0.9).sum()) + 1
