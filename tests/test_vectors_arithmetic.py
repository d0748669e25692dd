"""`skillgraft vector combine/scale/negate`: exact float32 arithmetic on saved vectors."""

from __future__ import annotations

import json

import pytest
import torch

from test_graft import state


@pytest.fixture
def vectors(model_trio, run_cli, tmp_path):
    trio = model_trio("qwen2", "bfloat16")
    for name, skilled, extra in (("v1", trio["skilled"], []), ("v2", trio["skilled2"], ["--shard-size", "30KB"]),
                                 ("part", trio["skilled2"], ["--include", r"layers\.1\."])):
        status, _, err = run_cli("extract", trio["base"], skilled, "-o", tmp_path / name, "--quiet", *extra)
        assert status == 0, err
    return trio, tmp_path


def test_combine_is_exact_weighted_sum(vectors, run_cli):
    trio, root = vectors
    status, out, err = run_cli("vector", "combine", f"{root / 'v1'}:1", f"{root / 'v2'}:-0.5", "-o", root / "c",
                               "--json")
    assert status == 0, err
    manifest = json.loads(out)
    a, b, c = state(root / "v1"), state(root / "v2"), state(root / "c")
    assert set(c) == set(a)
    assert all(torch.equal(c[n], a[n] + (-0.5 * b[n])) for n in a)
    assert manifest["kind"] == "vector" and [i["scale"] for i in manifest["inputs"]] == [1.0, -0.5]
    assert json.loads(run_cli("verify", root / "c", "--json")[1])["ok"] is True
    assert (root / "c" / "config.json").is_file() and (root / "c" / "tokenizer.json").is_file()


def test_scale_negate_and_partial_vectors(vectors, run_cli):
    trio, root = vectors
    assert run_cli("vector", "scale", f"{root / 'v1'}:0.25", "-o", root / "s", "--dtype", "bfloat16", "--quiet")[0] == 0
    assert run_cli("vector", "negate", root / "v1", "-o", root / "n", "--quiet")[0] == 0
    assert run_cli("vector", "combine", root / "v1", f"{root / 'part'}:2", "-o", root / "p", "--quiet")[0] == 0
    a, s, n, part, p = (state(root / x) for x in ("v1", "s", "n", "part", "p"))
    assert all(s[k].dtype == torch.bfloat16 and torch.equal(s[k], (a[k] * 0.25).to(torch.bfloat16)) for k in a)
    assert all(torch.equal(n[k], -a[k]) for k in a)
    assert part and all(".layers.1." in k for k in part)
    for k in a:  # a tensor absent from the partial vector counts as zero there
        assert torch.equal(p[k], a[k] + 2 * part[k] if k in part else a[k])
    manifest = json.loads((root / "p" / "skillgraft.json").read_text())
    assert manifest["tensors"]["partial"] == len(a) - len(part)


def test_grafting_a_negation_undoes_the_graft(vectors, run_cli):
    trio, root = vectors
    assert run_cli("vector", "negate", root / "v1", "-o", root / "n", "--quiet")[0] == 0
    assert run_cli("graft", trio["cp"], root / "v1", "-o", root / "g", "--quiet")[0] == 0
    assert run_cli("graft", root / "g", root / "n", "-o", root / "back", "--quiet")[0] == 0
    target, back = state(trio["cp"]), state(root / "back")
    worst = max(float((back[k].float() - target[k].float()).abs().max()) for k in target)
    assert worst <= 2 ** -7 * max(float(t.float().abs().max()) for t in target.values())  # bf16 rounding only


@pytest.mark.parametrize("make_args,message", [
    (lambda r, t: ["scale", r / "v1", "-o", r / "x"], "give a scale as VECTOR:SCALE"),
    (lambda r, t: ["combine", r / "model", "-o", r / "x"], "is a full model"),
    (lambda r, t: ["combine", r / "v1", "-o", r / "v1"], "inside the input folder"),
    (lambda r, t: ["negate", r / "missing", "-o", r / "x"], "does not exist"),
    (lambda r, t: ["combine", r / "v1", "-o", r / "x", "--dtype", "int8"], "--dtype"),
])
def test_bad_vector_input(vectors, run_cli, make_args, message):
    trio, root = vectors
    if message == "is a full model":  # a folder skillgraft wrote as a model is refused as a vector
        assert run_cli("graft", trio["cp"], root / "v1", "-o", root / "model", "--quiet")[0] == 0
    status, _, err = run_cli("vector", *make_args(root, trio))
    assert status == 2 and err.startswith("error:") and message in err, err
    assert not (root / "x").exists()
