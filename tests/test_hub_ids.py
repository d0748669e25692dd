"""Hugging Face ids wherever a model is read: resolved from a cache built here exactly as
huggingface_hub lays it out, recorded with their commit, and one fast `error:` line when an
id is neither cached nor reachable."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import types

import pytest
import torch

from hub_cache import add_to_cache
from test_graft import state


@contextlib.contextmanager
def counting_server():
    """A local port that accepts connections, counts them and hangs up: where the Hub would be."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    state = types.SimpleNamespace(count=0, url=f"http://127.0.0.1:{listener.getsockname()[1]}", stop=False)

    def serve():
        while not state.stop:
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            state.count += 1
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop = True
        thread.join()
        listener.close()


def hub_reachable_at(monkeypatch, url: str) -> None:
    """Point huggingface_hub at `url` with its own offline switch off (it reads both at import;
    the tests' conftest turns it offline), so only skillgraft's own offline check can keep
    it from the network."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)


@pytest.fixture
def hub(tmp_path, monkeypatch, model_trio):
    """org/base, org/skilled, org/cp (main) and org/cp@v2 (the skilled weights) in a fresh cache."""
    trio = model_trio("llama", "bfloat16")
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    commits = {name: add_to_cache(cache, f"org/{name}", trio[name]) for name in ("base", "skilled", "cp")}
    commits["cp@v2"] = add_to_cache(cache, "org/cp", trio["skilled"], revision="v2")
    return trio, commits


def test_graft_by_hub_ids_equals_local_folders_and_records_commits(hub, run_cli, tmp_path):
    trio, commits = hub
    status, _, err = run_cli("graft", "org/cp", "--delta", "org/base", "org/skilled", "-o", tmp_path / "by-id",
                             "--chat-template-from", "org/skilled", "--quiet")
    assert status == 0, err
    assert run_cli("graft", trio["cp"], "--delta", trio["base"], trio["skilled"], "-o", tmp_path / "by-path",
                   "--chat-template-from", trio["skilled"], "--quiet")[0] == 0
    by_id, by_path = state(tmp_path / "by-id"), state(tmp_path / "by-path")
    assert set(by_id) == set(by_path) and all(torch.equal(by_id[n], by_path[n]) for n in by_id)
    manifest = json.loads((tmp_path / "by-id" / "skillgraft.json").read_text())
    hubs = {entry["role"]: entry["hub"] for entry in manifest["inputs"]}
    assert hubs["target"] == {"repo_id": "org/cp", "revision": "main", "commit": commits["cp"]}
    assert hubs["skilled"]["commit"] == commits["skilled"]
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "by-id" / "README.md")
    assert set(card.data.base_model) == {"org/cp", "org/base", "org/skilled"}
    assert card.data.base_model_relation == "merge" and card.data.library_name == "transformers"


def test_revision_and_commit_pins(hub, run_cli, tmp_path):
    trio, commits = hub
    for spec in ("org/cp@v2", f"org/cp@{commits['cp@v2']}"):
        status, out, err = run_cli("inspect", spec, "--json")
        assert status == 0, err
        assert json.loads(out)["path"].endswith(commits["cp@v2"])
    status, _, err = run_cli("extract", "org/base", "org/cp@v2", "-o", tmp_path / "vec", "--quiet")
    assert status == 0, err
    inputs = json.loads((tmp_path / "vec" / "skillgraft.json").read_text())["inputs"]
    assert inputs[1]["hub"] == {"repo_id": "org/cp", "revision": "v2", "commit": commits["cp@v2"]}


def test_eval_and_train_read_hub_ids(hub, tmp_path):
    from skillgraft.evaluate.backends.hf import load_pretrained
    from skillgraft.train.dataset import load_tokenizer

    model, tokenizer = load_pretrained("org/cp")
    assert model.config.num_hidden_layers == 2 and tokenizer.eos_token == "</s>"
    assert load_tokenizer("org/skilled").pad_token == "<pad>"


def test_uncached_id_offline_is_one_fast_error_line(hub, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with counting_server() as attempts:  # where the Hub would be: offline means no attempt at all
        hub_reachable_at(monkeypatch, attempts.url)   # were the network used, it would be used here
        status, out, err = run_cli("graft", "mistralai/Mistral-7B-v0.1", "org/nothing", "-o", tmp_path / "o")
    assert attempts.count == 0
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("error: target mistralai/Mistral-7B-v0.1 is not in the Hugging Face cache")
    assert "hf download mistralai/Mistral-7B-v0.1" in err and "--offline" in err


def test_unreachable_hub_is_one_fast_error_line(hub, run_cli, tmp_path, monkeypatch):
    """Network allowed but the Hub unreachable (a closed port here): still one line, quickly."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)   # huggingface_hub reads both at import
    with counting_server() as attempts:   # a Hub that hangs up on every request
        monkeypatch.setattr(constants, "ENDPOINT", attempts.url)
        status, _, err = run_cli("extract", "org/base", "someone/uncached@v1", "-o", tmp_path / "o")
    assert 1 <= attempts.count <= 2, attempts.count   # no retry loop (each retry waits seconds)
    assert status == 2 and err.count("\n") == 1, err
    assert "someone/uncached@v1 is neither a local folder nor in the Hugging Face cache" in err
    assert "hf download someone/uncached --revision v1" in err
    assert not (tmp_path / "o").exists()


def test_offline_flag_sets_the_environment(hub, run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    status, _, err = run_cli("--offline", "inspect", "nobody/nothing")
    assert status == 2 and "network is off" in err


def test_lab_models_by_name(run_cli):
    status, out, err = run_cli("inspect", "lab:cp", "--json")
    assert status == 0, err
    assert json.loads(out)["path"].endswith("shipped/cp")
    status, _, err = run_cli("inspect", "lab:nope")
    assert status == 2 and "lab:base" in err and "lab:cp" in err


def test_train_with_an_uncached_id_fails_fast(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tmp_path / "c.yaml"
    (tmp_path / "t.txt").write_text("hello\n")
    config.write_text("model: nobody/nothing\ndata: {train: t.txt}\noutput_dir: run\n")
    with counting_server() as attempts:
        hub_reachable_at(monkeypatch, attempts.url)   # were the network used, it would be used here
        status, _, err = run_cli("train", config)
    assert attempts.count == 0
    assert status == 2 and err.count("\n") == 1 and "hf download nobody/nothing" in err


def test_a_partial_snapshot_names_what_is_missing_and_the_fetch_command(hub, run_cli, tmp_path, monkeypatch):
    """huggingface_hub returns a cached snapshot whatever it holds: one with only the configs
    (or weights but no tokenizer) is refused with the files it lacks and `hf download`."""
    trio, _ = hub
    cache = tmp_path / "hub"
    configs_only, no_tokenizer = tmp_path / "configs-only", tmp_path / "no-tokenizer"
    for folder, keep in ((configs_only, lambda p: p.suffix == ".json" and "tokenizer" not in p.name),
                         (no_tokenizer, lambda p: "tokenizer" not in p.name)):
        folder.mkdir()
        for path in trio["base"].iterdir():
            if path.is_file() and keep(path):
                (folder / path.name).write_bytes(path.read_bytes())
    add_to_cache(cache, "org/partial", configs_only)
    add_to_cache(cache, "org/notok", no_tokenizer)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status, out, err = run_cli("graft", "org/partial", "org/skilled", "-o", tmp_path / "o")
    assert status == 2 and out == "" and err.count("\n") == 1, err
    shards = sorted(p.name for p in trio["base"].glob("*.safetensors"))
    assert "org/partial: the cached snapshot" in err and f"is incomplete (no {shards[0]}" in err
    assert "hf download org/partial" in err and not (tmp_path / "o").exists()
    status, _, err = run_cli("inspect", "org/notok")
    assert status == 2 and "is incomplete (no tokenizer" in err and "hf download org/notok" in err
    # a blob deleted from the cache (a cache cleanup) leaves a dangling link: also a gap
    commit = add_to_cache(cache, "org/sharded", trio["base"])
    snapshot = cache / "models--org--sharded" / "snapshots" / commit
    (snapshot / shards[-1]).resolve().unlink()
    status, _, err = run_cli("inspect", "org/sharded")
    assert status == 2 and f"incomplete (no {shards[-1]})" in err
    assert run_cli("inspect", "org/base")[0] == 0  # a whole snapshot is used as before
    # with the network allowed, the rest is fetched; a Hub that cannot be reached says what is missing
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with counting_server() as attempts:
        hub_reachable_at(monkeypatch, attempts.url)
        status, _, err = run_cli("inspect", "org/notok")
    assert status == 2 and attempts.count >= 1 and err.count("\n") == 1, err
    assert "org/notok is only partly in the Hugging Face cache (no tokenizer" in err and "hf download org/notok" in err
