"""`skillgraft train` obeys the output contract of every writing verb: a foreign folder is
refused, an earlier run needs --force or --resume, and no stale part is listed in a new run."""

import json
import subprocess
import sys
from pathlib import Path

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


def test_an_empty_or_malformed_data_file_fails_before_any_model_is_loaded(tmp_path):
    """Checked in a second, not after the model (and transformers) loaded: the model named
    here does not even exist, and transformers is never imported."""
    code = ("import sys\nfrom skillgraft.cli import main\nstatus = main(sys.argv[1:])\n"
            "print(status, 'transformers' in sys.modules)")
    for name, content, needle in (("empty.jsonl", "\n", "holds no examples"),
                                  ("broken.jsonl", '{"text": "a"}\n{oops\n', "line 2 is not valid JSON"),
                                  ("chat.jsonl", '{"text": "a"}\n', "messages")):
        (tmp_path / name).write_text(content)
        config = tmp_path / f"{name}.yaml"
        fmt = "chat" if name == "chat.jsonl" else "text"
        config.write_text(f"model: {tmp_path / 'no-such-model'}\ndata: {{train: {name}, format: {fmt}}}\n"
                          f"output_dir: run\n")
        done = subprocess.run([sys.executable, "-c", code, "train", str(config)], capture_output=True, text=True)
        assert done.stdout.split() == ["2", "False"], (name, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and name in done.stderr and needle in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1


def test_ctrl_c_before_the_first_checkpoint_leaves_nothing_and_resume_says_why(tmp_path, world, capsys, monkeypatch):
    """The Trainer creates `checkpoints/` at once; stopped before its first save, a run leaves
    neither it nor an empty output_dir, and `--resume` says there was no save to resume."""
    from skillgraft.cli import main
    from skillgraft.train import loop

    def interrupted(model, rows, args, **kwargs):
        Path(args.output_dir).mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train_rows", interrupted)   # imported by train() when it runs
    config = train_config(tmp_path, world, max_steps=4, save_steps=2)
    assert main(["train", str(config)]) == 130
    assert not (tmp_path / "run").exists()
    capsys.readouterr()
    err = _error(capsys, "train", config, "--resume")
    assert "no checkpoint to resume from" in err and "save_steps=2" in err and "without --resume" in err


def test_run_and_train_take_out_and_quiet(tmp_path, world, capsys, monkeypatch):
    """`run CONFIG -o DIR --quiet` and `train CONFIG -o DIR --quiet` on a training config:
    the output goes to DIR (relative to the current directory) with progress off."""
    from skillgraft.cli import main

    config = train_config(tmp_path, world, max_steps=1, progress=True)
    monkeypatch.chdir(tmp_path)
    for verb, out in (("run", "by-run"), ("train", "by-train")):
        assert main([verb, str(config), "-o", out, "--quiet", "--json"]) == 0, capsys.readouterr().err[-2000:]
        capsys.readouterr()
        record = json.loads((tmp_path / out / "skillgraft.json").read_text())
        assert record["options"]["progress"] is False and record["options"]["output_dir"] == str(tmp_path / out)
