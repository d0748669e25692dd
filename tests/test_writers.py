"""One writer for every output folder: each verb that writes a folder publishes it through
`AtomicFolder` with a `write_manifest` manifest, and `skillgraft verify` passes on it (the
lab's writers are walked in the lab tests)."""

from __future__ import annotations

import json

import pytest

from persona_world import build_world
from train_helpers import train_config, train_json


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("writers-world"), n_persona=24)


def verified(run_cli, folder) -> dict:
    status, out, err = run_cli("verify", folder, "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["ok"] and report["unlisted"] == [], report
    return report


def test_vector_verbs(model_trio, run_cli, tmp_path):
    trio = model_trio("llama", "bfloat16")
    runs = {
        "extract": ["extract", trio["base"], trio["skilled"]],
        "graft": ["graft", trio["cp"], "--delta", trio["base"], trio["skilled"]],
        "combine": ["vector", "combine", f"{tmp_path / 'extract'}:1", f"{tmp_path / 'extract'}:-0.5"],
        "scale": ["vector", "scale", f"{tmp_path / 'extract'}:2"],
        "negate": ["vector", "negate", tmp_path / "extract"],
        "to-lora": ["vector", "to-lora", tmp_path / "extract", "--rank", "2"],
    }
    for name, argv in runs.items():
        status, _, err = run_cli(*argv, "-o", tmp_path / name, "--quiet")
        assert status == 0, (name, err)
        report = verified(run_cli, tmp_path / name)
        assert report["kind"] == {"graft": "model", "to-lora": "adapter"}.get(name, "vector")


@pytest.mark.parametrize("method,merge", [("lora", True), ("full", False)])
def test_training_run_folders(world, tmp_path, capsys, run_cli, method, merge):
    config = train_config(tmp_path, world, method=method, merge=merge, max_steps=4)
    out = train_json(capsys, config)
    report = verified(run_cli, out["output_dir"])  # the run folder verifies its parts recursively
    assert report["kind"] == "training-run"
    parts = json.loads((tmp_path / "run" / "skillgraft.json").read_text())["parts"]
    assert parts == (["adapter", "merged"] if method == "lora" else ["model"])
    for key in ("adapter_dir", "merged_dir", "model_dir"):
        if out[key]:
            assert verified(run_cli, out[key])["kind"] in ("adapter", "model")
    # a tampered part fails the run folder's verification
    weights = next((tmp_path / "run" / parts[0]).glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    status, _, err = run_cli("verify", out["output_dir"])
    assert status == 2 and f"{parts[0]}/{weights.name} (sha256 mismatch)" in err
