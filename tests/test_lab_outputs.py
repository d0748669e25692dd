"""Every folder the lab writes passes `skillgraft verify`, parts included: `lab build` (on tiny
budgets) and the shipped build. `lab demo --out` and the knowledge study are checked beside
the runs their own tests already make (tests/test_lab_demo.py, tests/test_lab_knowledge.py)."""

from __future__ import annotations

import json

from skillgraft.lab.build import MODELS
from skillgraft.lab.demo import SHIPPED
from skillgraft.lab.train import Budget


def verified(run_cli, folder, kind: str) -> dict:
    """`skillgraft verify --json` on `folder`: passes, is of `kind`, and lists every file."""
    status, out, err = run_cli("verify", folder, "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["ok"] and report["kind"] == kind and report["unlisted"] == [], report
    return report


def check_lab_build(run_cli, folder) -> None:
    """A `lab build` folder: kind lab-build, the five models as parts, each a model with a card."""
    manifest = json.loads((folder / "skillgraft.json").read_text())
    assert manifest["parts"] == sorted(MODELS) and "lab.json" in manifest["files"]
    total = verified(run_cli, folder, "lab-build")["files"]
    inner = 0
    for name in MODELS:
        part = json.loads((folder / name / "skillgraft.json").read_text())
        assert part["lab_model"] == name and part["options"]["seed"] == manifest["options"]["seed"]
        assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= set(part["files"])
        inner += verified(run_cli, folder / name, "model")["files"]
    assert total == len(manifest["files"]) + inner


def test_shipped_build_verifies(run_cli):
    check_lab_build(run_cli, SHIPPED)
    assert json.loads((SHIPPED / "lab.json").read_text())["seed"] == 0


def test_lab_build_output_verifies_and_a_changed_weight_fails(tmp_path, monkeypatch, run_cli):
    from skillgraft.lab import build as B

    for budget in ("BASE", "EXTRA_BASE", "CP", "SFT"):
        monkeypatch.setattr(B, budget, Budget(steps=4, batch=4, lr=1e-3, warmup=1))
    out = tmp_path / "lab"
    B.build(out, seed=3, quiet=True)
    check_lab_build(run_cli, out)
    weights = out / "cp" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    status, _, err = run_cli("verify", out)
    assert status == 2 and "cp/model.safetensors (sha256 mismatch)" in err
