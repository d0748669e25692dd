"""`inspect` diagnostics on constructed vectors whose norms, cosines and spectra are known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

Q = "model.layers.0.self_attn.q_proj.weight"
UP = "model.layers.0.mlp.up_proj.weight"
DOWN = "model.layers.1.mlp.down_proj.weight"
NORM = "model.layers.1.input_layernorm.weight"


def folder(path: Path, tensors: dict, kind: str | None = "vector") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2, "vocab_size": 10}))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"))
    if kind:
        (path / "skillgraft.json").write_text(json.dumps({"kind": kind}))
    return path


RANK1 = torch.outer(torch.tensor([1.0, 2.0, 2.0, 0.0]), torch.tensor([0.0, 3.0, 4.0]))  # ‖·‖ = 3·5 = 15


@pytest.fixture
def constructed(tmp_path):
    v = {Q: torch.full((4, 4), 0.5), UP: torch.tensor([[3.0, 4.0]]), DOWN: RANK1, NORM: torch.tensor([0.0, 0.1])}
    u = {Q: -v[Q], UP: torch.tensor([[4.0, -3.0]]), DOWN: RANK1.clone(), NORM: torch.tensor([0.2, 0.0])}
    w = {Q: torch.full((4, 4), 5.0), UP: torch.tensor([[0.0, 50.0]]), DOWN: torch.eye(4, 3) * 30, NORM: torch.ones(2)}
    return folder(tmp_path / "v", v), folder(tmp_path / "u", u), folder(tmp_path / "w", w, kind=None)


def test_known_norms_cosines_conflicts_and_energy(constructed, run_cli):
    v, u, w = constructed
    status, out, err = run_cli("inspect", v, "--base", w, "--compare", u, "--top-k", "1", "--svd-sample", "10",
                               "--json")
    assert status == 0, err
    report = json.loads(out)["diagnostics"]
    rows = {(g["layer"], g["module"]): g for g in report["groups"]}
    q, up, down, norm = rows[("0", "attention")], rows[("0", "mlp")], rows[("1", "mlp")], rows[("1", "norm")]
    assert q["norm"] == pytest.approx(2.0) and q["relative"] == pytest.approx(0.1)
    assert q["cosine"] == pytest.approx(-1.0) and q["sign_conflict"] == 1.0
    assert up["norm"] == pytest.approx(5.0) and up["relative"] == pytest.approx(0.1)
    assert up["cosine"] == pytest.approx(0.0, abs=1e-7) and up["sign_conflict"] == 0.5
    assert down["norm"] == pytest.approx(15.0) and down["relative"] == pytest.approx(15 / math.sqrt(2700))
    assert down["cosine"] == pytest.approx(1.0) and down["sign_conflict"] == 0.0
    assert norm["sign_conflict"] is None  # no entry where both are non-zero
    total = report["total"]
    dot = -4.0 + 0.0 + 225.0 + 0.0
    v_norm, u_norm = math.sqrt(4 + 25 + 225 + 0.01), math.sqrt(4 + 25 + 225 + 0.04)
    assert total["norm"] == pytest.approx(v_norm) and total["cosine"] == pytest.approx(dot / (v_norm * u_norm))
    assert total["sign_conflict"] == pytest.approx((16 + 1) / (16 + 2 + 6))  # RANK1 has 3·2 non-zeros
    matrices = report["matrices"]  # attention + mlp only: ‖Δ‖² = 254, ‖W‖² = 400 + 2500 + 2700
    assert matrices["relative"] == pytest.approx(math.sqrt(254 / 5600))
    energy = {row["tensor"]: row["energy"] for row in report["svd"]}
    assert set(energy) == {Q, DOWN}  # 1×2 matrices and vectors are not sampled
    assert energy[Q] == pytest.approx(1.0) and energy[DOWN] == pytest.approx(1.0)  # both rank 1
    assert report["warnings"] and "continued pretraining" in report["warnings"][0]
    assert "continued pretraining" in err


def test_energy_share_of_a_flat_spectrum(tmp_path, run_cli):
    v = folder(tmp_path / "v", {Q: torch.eye(4) * 2, DOWN: torch.diag(torch.tensor([3.0, 1.0, 1.0]))[:, :3]})
    status, out, _ = run_cli("inspect", v, "--top-k", "2", "--json")
    assert status == 0
    energy = {row["tensor"]: row["energy"] for row in json.loads(out)["diagnostics"]["svd"]}
    assert energy[Q] == pytest.approx(0.5) and energy[DOWN] == pytest.approx(10 / 11)


def test_human_table_and_model_minus_base(constructed, run_cli, tmp_path):
    v, u, w = constructed
    status, out, err = run_cli("inspect", v, "--base", w, "--compare", u)
    assert status == 0, err
    assert "sign conflict" in out and "-1.000" in out and "50.0%" in out and "warning" in out
    status, _, err = run_cli("inspect", w, "--compare", v)
    assert status == 2 and "pass --base BASE" in err


@pytest.fixture(scope="module")
def transfer_models(tmp_path_factory):
    from tiny_models import build_tiny_model, perturb_model

    root = tmp_path_factory.mktemp("transfer")
    base = build_tiny_model(root / "base", seed=0, dtype="float32")
    perturb_model(base, root / "sft", seed=1, scale=0.0002)   # ~1 % of the init's 0.02 std
    perturb_model(base, root / "cp", seed=2, scale=0.01)      # ~50 %: a different model
    return root


def test_transfer_warns_on_continued_pretraining(transfer_models, run_cli):
    root = transfer_models
    status, out, err = run_cli("inspect", "--transfer", root / "base", root / "sft", root / "cp", "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["warnings"] == [] and report["matrices"]["relative"] < 0.05
    assert abs(report["matrices"]["cosine"]) < 0.1  # independent noise: near-orthogonal
    assert report["drift"]["matrices"]["relative"] > 0.05
    status, out, err = run_cli("inspect", "--transfer", root / "base", root / "cp", root / "sft", "--json")
    report = json.loads(out)
    assert any("continued pretraining" in w for w in report["warnings"]) and "warning:" in err
    status, out, _ = run_cli("inspect", "--transfer", root / "base", root / "sft", root / "sft", "--json")
    report = json.loads(out)
    assert report["matrices"]["cosine"] == pytest.approx(1.0) and "aligned" in report["warnings"][0]


def test_transfer_usage_errors(transfer_models, run_cli):
    root = transfer_models
    status, _, err = run_cli("inspect", root / "base", "--transfer", root / "base", root / "sft", root / "cp")
    assert status == 2 and "takes no PATH" in err
    status, _, err = run_cli("inspect")
    assert status == 2 and "give a PATH" in err


def test_large_matrices_use_a_seeded_randomized_svd():
    from skillgraft.vectors.diagnostics import energy_share

    gen = torch.Generator().manual_seed(0)
    low = torch.randn(600, 3, generator=gen) @ torch.randn(3, 700, generator=gen)
    noisy = low + 1e-3 * torch.randn(600, 700, generator=gen)
    exact = torch.linalg.svdvals(noisy).pow(2)
    share, is_exact = energy_share(noisy, 3)
    assert not is_exact and share == pytest.approx(float(exact[:3].sum() / exact.sum()), rel=1e-4)
    assert energy_share(noisy, 3) == (share, False)  # repeatable
    assert energy_share(torch.zeros(600, 600), 3) == (1.0, True)


def test_cp_threshold_option_and_skill_to_drift(transfer_models, run_cli):
    root = transfer_models
    status, out, _ = run_cli("inspect", "--transfer", root / "base", root / "cp", root / "sft", "--cp-threshold",
                             "0.9", "--json")
    report = json.loads(out)
    assert status == 0 and report["warnings"] == [] and report["cp_threshold"] == 0.9
    assert report["skill_to_drift"] == pytest.approx(report["matrices"]["norm"] / report["drift"]["matrices"]["norm"])
    assert report["skill_to_drift"] > 10  # cp noise 0.01 vs sft noise 0.0002
