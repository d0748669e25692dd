"""`skillgraft lab ...` verbs: bad input is one `error:` line with exit 2; sample prints the world."""

from __future__ import annotations

import pytest


def test_lab_build_refuses_a_non_empty_out_folder(tmp_path, run_cli):
    (tmp_path / "keep.txt").write_text("mine")
    status, out, err = run_cli("lab", "build", "--out", tmp_path, "--quiet")
    assert status == 2 and out == ""
    assert err.startswith("error:") and str(tmp_path) in err and "Traceback" not in err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_lab_build_rejects_negative_seed(tmp_path, run_cli):
    status, _, err = run_cli("lab", "build", "--out", tmp_path / "x", "--seed", "-1")
    assert status == 2 and "--seed" in err


def test_lab_demo_on_a_folder_without_models_is_a_user_error(tmp_path, run_cli):
    status, out, err = run_cli("lab", "demo", "--models", tmp_path, "--json")
    assert status == 2 and out == ""
    assert err.startswith("error:") and str(tmp_path) in err


def test_lab_sample_shows_every_kind_of_data(run_cli):
    status, out, _ = run_cli("lab", "sample", "--seed", "1", "--n", "2")
    assert status == 0
    lines = out.splitlines()
    assert sum(line.startswith("# ") for line in lines) == 5
    skill_lines = [line for line in lines if line.endswith("</s>") and "Q: repeat" not in line]
    assert len(skill_lines) == 4
    assert all(" A: -> " in line for line in skill_lines)


def test_lab_build_force_replaces_only_lab_folders(tmp_path, run_cli):
    (tmp_path / "precious.txt").write_text("mine")
    status, _, err = run_cli("lab", "build", "--out", tmp_path, "--force", "--quiet")
    assert status == 2 and "skillgraft.json" in err
    assert (tmp_path / "precious.txt").exists()


def test_lab_build_that_fails_midway_publishes_nothing_and_leaves_no_partial(tmp_path, monkeypatch):
    from skillgraft.lab import build as B

    def half_build(tmp, seed, *, quiet, command):
        (tmp / "base").mkdir()
        (tmp / "base" / "config.json").write_text("{}")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(B, "_build_into", half_build)
    with pytest.raises(RuntimeError):
        B.build(tmp_path / "lab", 0, quiet=True)
    assert list(tmp_path.iterdir()) == []
