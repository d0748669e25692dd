"""Guarded inputs: the wrong kind of folder, empty selections, crash leftovers and stray
weight files are refused with one `error:` line (exit 2) and nothing published."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from test_bad_input import expect_error


@pytest.fixture
def made(model_trio, run_cli, tmp_path):
    """A vector and a grafted model written by skillgraft, beside the tiny trio."""
    trio = model_trio("llama", "bfloat16")
    assert run_cli("extract", trio["base"], trio["skilled"], "-o", tmp_path / "vec", "--quiet")[0] == 0
    assert run_cli("graft", trio["cp"], tmp_path / "vec", "-o", tmp_path / "grafted", "--quiet")[0] == 0
    return trio, tmp_path / "vec", tmp_path / "grafted"


def strip_provenance(folder: Path, dest: Path) -> Path:
    """A copy without skillgraft.json and without our safetensors metadata: as another tool writes it."""
    shutil.copytree(folder, dest)
    (dest / "skillgraft.json").unlink(missing_ok=True)
    for shard in dest.glob("*.safetensors"):
        save_file(load_file(shard), shard, metadata={"format": "pt"})
    return dest


def test_a_model_where_a_vector_belongs(made, run_cli, tmp_path):
    trio, vec, grafted = made
    out = tmp_path / "o"
    expect_error(run_cli, ["graft", trio["cp"], trio["skilled"], "-o", out], "is a full model",
                 "did you mean --delta BASE SKILLED", "--assume-vector", out=out)
    expect_error(run_cli, ["graft", trio["cp"], grafted, "-o", out], "is a full model (by its skillgraft.json)",
                 out=out)
    for verb in (["vector", "combine", f"{trio['skilled']}:1"], ["vector", "scale", f"{trio['skilled']}:0.5"],
                 ["vector", "negate", str(trio["skilled"])], ["vector", "to-lora", str(trio["skilled"]), "--rank", "2"]):
        expect_error(run_cli, [*verb, "-o", out], "is a full model", out=out)
    # a real model read as a vector on purpose: --assume-vector (weights are only doubled, as asked)
    status, _, err = run_cli("graft", trio["cp"], trio["skilled"], "-o", out, "--assume-vector", "--quiet")
    assert status == 0, err


def test_a_vector_or_adapter_where_a_model_belongs(made, run_cli, tmp_path):
    trio, vec, _ = made
    out = tmp_path / "o"
    expect_error(run_cli, ["graft", vec, vec, "-o", out], "target", "is a vector", out=out)
    expect_error(run_cli, ["extract", vec, trio["skilled"], "-o", out], "base", "is a vector", out=out)
    expect_error(run_cli, ["graft", trio["cp"], "--delta", trio["base"], vec, "-o", out], "is a vector", out=out)
    expect_error(run_cli, ["eval", str(vec), "--suite", "retention"], "is a vector", "not a model")
    adapter = tmp_path / "adapter"
    assert run_cli("vector", "to-lora", vec, "--rank", "2", "-o", adapter, "--quiet")[0] == 0
    expect_error(run_cli, ["graft", adapter, vec, "-o", out], "is a LoRA adapter", out=out)


def test_vectors_from_other_tools_are_recognised_by_their_weights(made, run_cli, tmp_path):
    trio, vec, _ = made
    foreign_vector = strip_provenance(vec, tmp_path / "foreign-vector")
    foreign_model = strip_provenance(trio["skilled"], tmp_path / "foreign-model")
    status, out, err = run_cli("inspect", foreign_vector, "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["kind"] == "vector" and "norm weights" in report["kind_evidence"]
    assert run_cli("graft", trio["cp"], foreign_vector, "-o", tmp_path / "ok", "--quiet")[0] == 0
    expect_error(run_cli, ["graft", trio["cp"], foreign_model, "-o", tmp_path / "no"], "norm weights average")


def offset_norms(folder: Path, dest: Path) -> Path:
    """A copy whose norm scales are stored as offsets from 1 (w − 1, as Gemma and some other
    families store them), written as another tool writes it: its norms read as a delta's."""
    strip_provenance(folder, dest)
    for shard in dest.glob("*.safetensors"):
        tensors = load_file(shard)
        save_file({n: t - 1 if "norm" in n else t for n, t in tensors.items()}, shard, metadata={"format": "pt"})
    return dest


def test_a_model_with_offset_norm_scales_is_a_target(made, run_cli, tmp_path):
    trio, vec, _ = made
    target = offset_norms(trio["cp"], tmp_path / "offset-model")
    status, out, err = run_cli("inspect", target, "--json")
    assert json.loads(out)["kind"] == "vector"   # what its weights alone say
    status, _, err = run_cli("graft", target, vec, "-o", tmp_path / "offset-grafted", "--quiet")
    assert status == 0, err
    assert "as a delta's do, but its config.json names LlamaForCausalLM and it has a tokenizer: taken as a model" in err
    status, _, err = run_cli("extract", target, trio["skilled"], "-o", tmp_path / "vec2", "--quiet")
    assert status == 0, err
    bare = tmp_path / "bare"   # no tokenizer: nothing but the weights to go by; --assume-model says what it is
    shutil.copytree(target, bare, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*", "vocab*"))
    expect_error(run_cli, ["graft", bare, vec, "-o", tmp_path / "o"], "target", "reads as a vector",
                 "--assume-model", out=tmp_path / "o")
    status, _, err = run_cli("graft", bare, vec, "-o", tmp_path / "o", "--assume-model", "--quiet")
    assert status == 0 and "note:" not in err, err
    # a declared vector stays a vector whatever its folder holds
    expect_error(run_cli, ["graft", vec, vec, "-o", tmp_path / "o2", "--assume-model"], "is a vector",
                 out=tmp_path / "o2")


@pytest.mark.parametrize("args,needle", [
    (["--include", "self_atn"], "--include 'self_atn' matches no tensor"),
    (["--exclude", "."], "--exclude '.' excludes every tensor"),
    (["--include", "embed"], "kept unless --with-embeddings"),
])
def test_graft_that_would_touch_nothing(made, run_cli, tmp_path, args, needle):
    trio, vec, _ = made
    out = tmp_path / "o"
    expect_error(run_cli, ["graft", trio["cp"], vec, "-o", out, *args], "graft would touch no tensor", needle,
                 out=out)


def test_extract_combine_and_to_lora_that_would_touch_nothing(made, run_cli, tmp_path):
    trio, vec, _ = made
    out = tmp_path / "o"
    expect_error(run_cli, ["extract", trio["base"], trio["skilled"], "-o", out, "--include", "self_atn"],
                 "extract would touch no tensor", "--include 'self_atn' matches no tensor", out=out)
    expect_error(run_cli, ["vector", "to-lora", vec, "--rank", "2", "-o", out, "--include", "nothing"],
                 "to-lora would touch no tensor", out=out)
    assert run_cli("extract", trio["base"], trio["skilled"], "-o", tmp_path / "q", "--include", "q_proj",
                   "--quiet")[0] == 0
    expect_error(run_cli, ["graft", trio["cp"], tmp_path / "q", "-o", out, "--include", "v_proj"],
                 "every selected tensor is skipped (most often: not in vector)", out=out)


def test_a_killed_run_is_cleaned_up_by_the_next(made, run_cli, tmp_path):
    """kill -9 leaves the partial folder; the lock it held dies with it, so the next run knows
    the writer is gone and removes its leftovers."""
    trio, vec, _ = made
    out = tmp_path / "out"
    code = ("import sys, time\nfrom skillgraft.checkpoint import AtomicFolder\n"
            "with AtomicFolder(sys.argv[1]) as temp:\n"
            "    (temp / 'model.safetensors').write_bytes(b'x' * 1000)\n"
            "    print('writing', flush=True)\n    time.sleep(60)\n")
    victim = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert victim.stdout.readline().strip() == "writing"
    # while it lives, its output is not touched and a second writer is refused
    expect_error(run_cli, ["graft", trio["cp"], vec, "-o", out], f"pid {victim.pid}", "is writing")
    assert len(list(tmp_path.glob(".out.partial-*"))) == 2  # its folder and its lock
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    status, _, err = run_cli("graft", trio["cp"], vec, "-o", out, "--quiet")
    assert status == 0, err
    assert "removed 1 partial output(s) of killed runs" in err
    assert not list(tmp_path.glob(".out.*")) and (out / "skillgraft.json").is_file()


def test_force_swap_interrupted_between_renames_is_put_back(made, run_cli, tmp_path, monkeypatch):
    """If publishing the new folder fails after the old one was moved aside, the old one is
    renamed back instead of being left hidden as .OUT.old-*."""
    import skillgraft.checkpoint.publish as publish

    trio, vec, grafted = made
    before = json.loads((grafted / "skillgraft.json").read_text())["created"]
    real_rename, calls = os.rename, []

    def flaky(src, dst):  # the new folder's rename into place fails, after the old one moved aside
        calls.append((src, dst))
        if str(dst) == str(grafted) and ".partial-" in str(src):
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(publish.os, "rename", flaky)
    status, _, err = run_cli("graft", trio["cp"], vec, "-o", grafted, "--force", "--quiet")
    monkeypatch.undo()
    assert status == 2 and "cannot publish" in err
    assert any(".old-" in str(dst) for _, dst in calls)  # the old folder had been moved aside
    assert json.loads((grafted / "skillgraft.json").read_text())["created"] == before
    assert not list(tmp_path.glob(".grafted.*"))


def test_verify_fails_on_a_weight_file_it_does_not_list(made, run_cli):
    _, vec, grafted = made
    assert run_cli("verify", grafted)[0] == 0
    shutil.copy(grafted / "model.safetensors", grafted / "model-extra.safetensors")
    (grafted / "notes.txt").write_text("fine")
    expect_error(run_cli, ["verify", grafted], "model-extra.safetensors (a weight file the manifest does not list)")
    status, out, _ = run_cli("verify", grafted, "--json")
    report = json.loads(out)
    assert report["unlisted_weights"] == ["model-extra.safetensors"] and "notes.txt" in report["unlisted"]


def test_model_cards(made, run_cli, tmp_path):
    from huggingface_hub import ModelCard

    trio, vec, grafted = made
    assert run_cli("vector", "to-lora", vec, "--rank", "2", "-o", tmp_path / "adapter", "--quiet")[0] == 0
    for folder, library in ((vec, "skillgraft"), (grafted, "transformers"), (tmp_path / "adapter", "peft")):
        card = ModelCard.load(folder / "README.md")
        assert card.data.library_name == library and "skillgraft" in card.data.tags
        manifest = json.loads((folder / "skillgraft.json").read_text())
        assert "README.md" in manifest["files"]
    text = (grafted / "README.md").read_text()
    assert str(vec) in text and "## Skipped" in text and "input_embeddings of the target" in text


def test_outputs_are_world_readable(made, run_cli, tmp_path):
    _, _, grafted = made
    from skillgraft.checkpoint import write_file_atomic

    path = write_file_atomic(tmp_path / "r.json", "{}")
    for file in [path, *grafted.iterdir()]:
        assert file.stat().st_mode & 0o777 == 0o644, file
