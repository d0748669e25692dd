"""Every bad input: exit status 2, one `error:` line naming the culprit, nothing half-written."""

from __future__ import annotations

import errno
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file


def write_raw_safetensors(path: Path, header: dict, data: bytes, declared_len: int | None = None) -> None:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    length = len(raw) if declared_len is None else declared_len
    path.write_bytes(struct.pack("<Q", length) + raw + data)


def tiny_folder(root: Path, name: str, tensors: dict[str, torch.Tensor], config: dict | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config or {"model_type": "llama", "num_hidden_layers": 1}))
    if tensors:
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.fixture
def pair(tmp_path):
    base = {"model.layers.0.w": torch.zeros(4, 4), "model.norm.weight": torch.ones(4)}
    skilled = {"model.layers.0.w": torch.ones(4, 4), "model.norm.weight": torch.full((4,), 2.0)}
    return tiny_folder(tmp_path, "base", base), tiny_folder(tmp_path, "skilled", skilled)


def expect_error(run_cli, args, *needles: str, out: Path | None = None) -> str:
    status, stdout, err = run_cli(*args)
    assert status == 2, (status, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    if out is not None:
        assert not out.exists() or not any(out.iterdir())
        assert not list(out.parent.glob(f".{out.name}.partial-*")), "temporary folder left behind"
    return lines[0]


def test_missing_folder_and_config(run_cli, tmp_path, pair):
    base, skilled = pair
    expect_error(run_cli, ["extract", tmp_path / "nope", skilled, "-o", tmp_path / "v"], "nope", "does not exist")
    (tmp_path / "noconf").mkdir()
    expect_error(run_cli, ["extract", tmp_path / "noconf", skilled, "-o", tmp_path / "v"], "noconf", "no config.json")


def test_no_safetensors(run_cli, tmp_path, pair):
    _, skilled = pair
    empty = tiny_folder(tmp_path, "empty", {})
    expect_error(run_cli, ["extract", empty, skilled, "-o", tmp_path / "v"], "empty", "no model.safetensors")


def test_pickle_refused_unless_allowed(run_cli, tmp_path, pair):
    base, skilled = pair
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy(skilled / "config.json", legacy / "config.json")
    torch.save({"model.layers.0.w": torch.full((4, 4), 3.0), "model.norm.weight": torch.ones(4)},
               legacy / "pytorch_model.bin")
    expect_error(run_cli, ["extract", base, legacy, "-o", tmp_path / "v"], "legacy", "--allow-pickle")
    status, _, err = run_cli("extract", base, legacy, "-o", tmp_path / "v", "--allow-pickle", "--quiet")
    assert status == 0, err
    from safetensors.torch import load_file

    assert torch.equal(load_file(tmp_path / "v" / "model.safetensors")["model.layers.0.w"], torch.full((4, 4), 3.0))


@pytest.mark.parametrize("case, needle", [
    ("truncated", "outside the data section"),
    ("header_too_long", "header length"),
    ("offsets_outside", "outside the data section"),
    ("overlap", "overlap"),
    ("unknown_dtype", "unknown dtype 'Q7'"),
    ("bad_json", "not valid JSON"),
    ("size_mismatch", "needs 64"),
])
def test_corrupt_shards(run_cli, tmp_path, pair, case, needle):
    base, _ = pair
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(base / "config.json", bad / "config.json")
    file = bad / "model.safetensors"
    entry = lambda b, e, dtype="F32", shape=(4, 4): {"dtype": dtype, "shape": list(shape), "data_offsets": [b, e]}
    if case == "truncated":
        save_file({"model.layers.0.w": torch.ones(4, 4), "model.norm.weight": torch.ones(4)}, file)
        file.write_bytes(file.read_bytes()[:-10])
    elif case == "header_too_long":
        write_raw_safetensors(file, {"model.layers.0.w": entry(0, 64)}, bytes(64), declared_len=10**6)
    elif case == "offsets_outside":
        write_raw_safetensors(file, {"model.layers.0.w": entry(64, 128)}, bytes(64))
    elif case == "overlap":
        write_raw_safetensors(file, {"model.layers.0.w": entry(0, 64), "model.norm.weight": entry(48, 64, shape=(4,))},
                              bytes(64))
    elif case == "unknown_dtype":
        write_raw_safetensors(file, {"model.layers.0.w": entry(0, 64, dtype="Q7")}, bytes(64))
    elif case == "bad_json":
        file.write_bytes(struct.pack("<Q", 8) + b"{not js}")
    elif case == "size_mismatch":
        write_raw_safetensors(file, {"model.layers.0.w": entry(0, 60)}, bytes(64))
    expect_error(run_cli, ["graft", bad, "--delta", base, base, "-o", tmp_path / "out"], "bad", needle,
                 out=tmp_path / "out")


@pytest.mark.parametrize("shard_name, needle", [("model-00002.safetensors", "missing"),
                                                ("../outside.safetensors", "outside")])
def test_index_naming_missing_or_escaping_shard(run_cli, tmp_path, pair, shard_name, needle):
    base, _ = pair
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(base / "config.json", sharded / "config.json")
    save_file({"model.layers.0.w": torch.ones(4, 4)}, sharded / "model-00001.safetensors")
    save_file({"model.norm.weight": torch.ones(4)}, tmp_path / "outside.safetensors")
    index = {"weight_map": {"model.layers.0.w": "model-00001.safetensors", "model.norm.weight": shard_name}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    expect_error(run_cli, ["extract", base, sharded, "-o", tmp_path / "v"], "model.safetensors.index.json",
                 shard_name, needle, out=tmp_path / "v")


@pytest.mark.parametrize("config, needle", [({"model_type": "gpt2", "num_hidden_layers": 1}, "model_type"),
                                            ({"model_type": "llama", "num_hidden_layers": 2}, "layer count")])
def test_architecture_mismatch(run_cli, tmp_path, pair, config, needle):
    base, _ = pair
    other = tiny_folder(tmp_path, "other", {"model.layers.0.w": torch.ones(4, 4)}, config)
    expect_error(run_cli, ["extract", base, other, "-o", tmp_path / "v"], needle, "--allow-arch-mismatch",
                 out=tmp_path / "v")
    status, _, err = run_cli("extract", base, other, "-o", tmp_path / "v", "--allow-arch-mismatch", "--quiet")
    assert status == 0, err


def test_nonfinite_output_refused(run_cli, tmp_path, pair):
    base, skilled = pair
    assert run_cli("extract", base, skilled, "-o", tmp_path / "vec", "--quiet")[0] == 0
    expect_error(run_cli, ["graft", base, f"{tmp_path / 'vec'}:1e39", "-o", tmp_path / "out"],
                 "model.layers.0.w", "NaN/Inf", "--allow-nonfinite", out=tmp_path / "out")
    status, _, err = run_cli("graft", base, f"{tmp_path / 'vec'}:1e39", "-o", tmp_path / "out", "--allow-nonfinite",
                             "--quiet")
    assert status == 0, err


def test_disk_full_leaves_nothing(run_cli, tmp_path, pair, monkeypatch):
    from skillgraft.checkpoint.writer import ShardedWriter

    base, skilled = pair

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ShardedWriter, "_emit", full)
    expect_error(run_cli, ["extract", base, skilled, "-o", tmp_path / "vec"], "disk full", str(tmp_path / "vec"),
                 out=tmp_path / "vec")
    assert not (tmp_path / "vec").exists()


def test_output_inside_input_and_nonempty_output(run_cli, tmp_path, pair):
    base, skilled = pair
    expect_error(run_cli, ["extract", base, skilled, "-o", skilled / "vec"], "inside the input folder")
    expect_error(run_cli, ["graft", base, "--delta", base, skilled, "-o", base], "inside the input folder")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    expect_error(run_cli, ["extract", base, skilled, "-o", busy], "not empty", "--force")
    assert (busy / "keep.txt").is_file()
    # --force replaces only what skillgraft wrote: a folder of someone else's files is refused
    expect_error(run_cli, ["extract", base, skilled, "-o", busy, "--force"], "skillgraft did not write")
    assert (busy / "keep.txt").is_file()
    ours = tmp_path / "ours"
    assert run_cli("extract", base, skilled, "-o", ours, "--quiet")[0] == 0
    (ours / "keep.txt").write_text("x")
    status, _, _ = run_cli("extract", base, skilled, "-o", ours, "--force", "--quiet")
    assert status == 0 and not (ours / "keep.txt").exists() and (ours / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".ours.*"))  # neither the partial nor the swapped-out old folder remains


def test_bad_options(run_cli, tmp_path, pair):
    base, skilled = pair
    expect_error(run_cli, ["extract", base, skilled, "-o", tmp_path / "v", "--include", "("], "--include", "'('")
    expect_error(run_cli, ["extract", base, skilled, "-o", tmp_path / "v", "--dtype", "int8"], "--dtype", "int8")
    expect_error(run_cli, ["graft", base, "-o", tmp_path / "out"], "nothing to graft")
    expect_error(run_cli, ["graft", base, "--delta", base, skilled, "-o", tmp_path / "o", "--shard-size", "lots"],
                 "--shard-size")
    expect_error(run_cli, ["extract", base], "Missing")
    model_out = tmp_path / "model"
    assert run_cli("graft", base, "--delta", base, skilled, "-o", model_out, "--quiet")[0] == 0
    expect_error(run_cli, ["graft", base, model_out, "-o", tmp_path / "o3"], "is a full model", "--delta BASE SKILLED")
