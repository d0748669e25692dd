"""Scale schedules: the right layers and module kinds get the right factor."""

from __future__ import annotations

import json

import pytest
import torch

from skillgraft.errors import UserError
from skillgraft.vectors.schedule import build_schedule, interpolate, layer_index, module_kind
from test_graft import state


@pytest.mark.parametrize("name,kind,layer", [
    ("model.layers.3.self_attn.q_proj.weight", "attention", 3),
    ("model.layers.3.self_attn.q_norm.weight", "norm", 3),
    ("model.layers.0.post_attention_layernorm.weight", "norm", 0),
    ("model.layers.12.mlp.down_proj.weight", "mlp", 12),
    ("transformer.h.1.attn.c_attn.weight", "attention", 1),
    ("transformer.h.1.mlp.c_proj.weight", "mlp", 1),
    ("transformer.h.1.ln_2.bias", "norm", 1),
    ("transformer.ln_f.weight", "norm", None),
    ("model.embed_tokens.weight", "embedding", None),
    ("lm_head.weight", "embedding", None),
])
def test_module_kind_and_layer(name, kind, layer):
    assert module_kind(name) == kind
    assert layer_index(name) == layer


def test_interpolation_and_rules():
    assert [interpolate([0.0, 1.0], i, 5) for i in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [interpolate([0.0, 1.0, 0.0], i, 5) for i in range(5)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    schedule = build_schedule(["0-3=0.5", "2=0", "6-=3"], ["mlp=2", "attention=[0, 1]"], None, num_layers=8)
    assert schedule.factor("model.layers.1.mlp.up_proj.weight") == 1.0        # 0.5 * 2
    assert schedule.factor("model.layers.2.mlp.up_proj.weight") == 0.0        # last rule wins
    assert schedule.factor("model.layers.7.input_layernorm.weight") == 3.0
    assert schedule.factor("model.layers.4.input_layernorm.weight") == 1.0
    assert schedule.factor("model.layers.7.self_attn.k_proj.weight") == 3.0   # 3 * attention curve(7/7)=1
    assert schedule.factor("model.layers.0.self_attn.k_proj.weight") == 0.0
    assert schedule.factor("model.norm.weight") == 1.0


@pytest.mark.parametrize("num_layers,expected", [
    (30, [0.75] * 6 + [1.3] * 6 + [1.25] * 6 + [0.45] * 6 + [1.5] * 6),
    (5, [0.75, 1.3, 1.25, 0.45, 1.5]),
    (4, [0.75, 1.3, 0.45, 1.5]),       # middles at 12.5, 37.5, 62.5, 87.5 %: none in [40 %, 60 %)
    (2, [1.3, 0.45]),                   # middles at 25 and 75 %
    (10, [0.75] * 2 + [1.3] * 2 + [1.25] * 2 + [0.45] * 2 + [1.5] * 2),
])
def test_shares_of_the_depth_mean_the_same_blocks_at_any_depth(num_layers, expected):
    """'A%-B%' ranges (the shipped persona graft's) cover layer i of L when its middle does,
    A <= 100·(i+½)/L < B, computed exactly (no layer on a boundary goes to two ranges)."""
    rules = ["0%-20%=0.75", "20%-40%=1.3", "40%-60%=1.25", "60%-80%=0.45", "80%-=1.5"]
    schedule = build_schedule(rules, num_layers=num_layers)
    assert [schedule.factor(f"model.layers.{i}.mlp.up_proj.weight") for i in range(num_layers)] == expected
    assert schedule.describe()["layers"][-1] == "80%-100%=1.5"
    assert build_schedule(["12.5%-37.5%=2"]).describe()["layers"] == ["12.5%-37.5%=2"]
    mixed = build_schedule(["0%-50%=0", "1=2"], num_layers=4)   # the last rule naming a layer wins
    assert [mixed.factor(f"model.layers.{i}.mlp.up_proj.weight") for i in range(4)] == [0.0, 2.0, 1.0, 1.0]


@pytest.mark.parametrize("option,value,message", [
    ("layers", "7-2=1", "ends before"), ("layers", "20%-10%=1", "A < B <= 100"), ("layers", "0%-120%=1", "A < B"),
    ("layers", "5%=1", "A%-B%"), ("layers", "a=1", "FIRST-LAST"), ("layers", "1=x", "not a number"),
    ("modules", "conv=1", "KIND"), ("modules", "mlp=[1,'a']", "list of numbers"), ("depth", "[]", "list"),
])
def test_bad_rules_name_the_option(option, value, message):
    with pytest.raises(UserError, match=message):
        build_schedule(**{option: [value] if option != "depth" else value})


@pytest.fixture(scope="module")
def deep_pair(tmp_path_factory):
    """A 4-layer float32 target and a vector for it."""
    from tiny_models import build_tiny_model, perturb_model

    root = tmp_path_factory.mktemp("deep")
    base = build_tiny_model(root / "base", seed=0, dtype="float32", layers=4)
    perturb_model(base, root / "skilled", seed=1)
    return root


def test_graft_applies_schedule_per_layer_and_kind(deep_pair, run_cli, tmp_path):
    root = deep_pair
    status, out, err = run_cli(
        "graft", root / "base", "--delta", root / "base", f"{root / 'skilled'}:2", "-o", tmp_path / "out",
        "--scale-layers", "0-1=0.5", "--scale-layers", "3=0", "--scale-modules", "mlp=3",
        "--scale-depth", "[1, 2]", "--json")
    assert status == 0, err
    manifest = json.loads(out)
    base, skilled, got = state(root / "base"), state(root / "skilled"), state(tmp_path / "out")
    layer_part = {0: 0.5, 1: 0.5, 2: 1.0, 3: 0.0}
    checked = set()
    for name, weights in base.items():
        delta = skilled[name] - weights
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(got[name], weights)
            continue
        layer = layer_index(name)
        expected = 2.0 * (layer_part[layer] * (1 + layer / 3) if layer is not None else 1.0)
        expected *= 3.0 if ".mlp." in name else 1.0
        applied = float(((got[name] - weights) * delta).sum() / (delta * delta).sum())
        assert applied == pytest.approx(expected, abs=1e-4), name
        checked.add((layer, ".mlp." in name))
        if expected != 2.0:
            assert manifest["scales"][name] == [pytest.approx(expected)]
    assert checked >= {(0, True), (1, False), (2, True), (3, False), (None, False)}
    assert manifest["options"]["schedule"]["layers"] == ["0-1=0.5", "3-3=0"]


def test_bad_schedule_option_is_one_error_line(deep_pair, run_cli, tmp_path):
    status, _, err = run_cli("graft", deep_pair / "base", "--delta", deep_pair / "base", deep_pair / "skilled",
                             "-o", tmp_path / "out", "--scale-modules", "brain=2")
    assert status == 2 and err.startswith("error: --scale-modules 'brain=2'") and err.count("\n") == 1
