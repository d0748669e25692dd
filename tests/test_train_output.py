"""`skillgraft train` obeys the output contract of every writing verb: a foreign folder is
refused, an earlier run needs --force or --resume, and no stale part is listed in a new run."""

import json

from persona_world import build_world
from train_helpers import train_config, train_json

import pytest


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("outworld"), n_persona=16)


def _error(capsys, *argv) -> str:
    from skillgraft.cli import main

    rc = main(list(map(str, argv)))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1, err
    return err


def test_a_foreign_folder_is_refused_and_left_alone(tmp_path, world, capsys):
    config = train_config(tmp_path, world, max_steps=2)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    err = _error(capsys, "train", config, "--force")
    assert "did not write" in err and "notes.txt" in err
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine" and len(list((tmp_path / "run").iterdir())) == 1


def test_an_earlier_run_needs_force_and_force_replaces_it(tmp_path, world, capsys):
    config = train_config(tmp_path, world, max_steps=2, merge=True)
    first = train_json(capsys, config)
    err = _error(capsys, "train", config)
    assert "--force" in err and "--resume" in err
    assert (tmp_path / "run" / "merged").is_dir()
    config = train_config(tmp_path, world, max_steps=3, merge=False)
    second = train_json(capsys, config, "--force")
    assert second["steps"] == 3 and first["steps"] == 2
    assert not (tmp_path / "run" / "merged").exists()  # the earlier run's merged model went with it
    record = json.loads((tmp_path / "run" / "skillgraft.json").read_text())
    assert record["parts"] == ["adapter"] and record["outputs"]["merged_dir"] is None


def test_a_resumed_run_lists_no_stale_part(tmp_path, world, capsys):
    config = train_config(tmp_path, world, max_steps=4, merge=True, save_steps=2, stop_at_step=2)
    train_json(capsys, config)
    assert (tmp_path / "run" / "merged").is_dir()
    config = train_config(tmp_path, world, max_steps=4, merge=False, save_steps=2)
    out = train_json(capsys, config, "--resume")
    assert out["steps"] == 4 and out["merged_dir"] is None
    record = json.loads((tmp_path / "run" / "skillgraft.json").read_text())
    assert record["parts"] == ["adapter"] and not (tmp_path / "run" / "merged").exists()
