"""CPU defaults chosen, not inherited: threads from the free cores, float32 where a half dtype
is slow here, and a heartbeat line while long work runs without a visible progress bar."""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest

from skillgraft import cpu
from skillgraft.heartbeat import Heartbeat


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_the_thread_count_leaves_a_core_to_a_process_that_spins(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = cpu.usable_cores()
    if cores < 2:
        pytest.skip("one usable core: nothing to leave free")
    spinner = multiprocessing.get_context("spawn").Process(target=_spin, args=(20.0,))
    spinner.start()
    try:
        time.sleep(1.0)  # the spawned interpreter is up and spinning
        threads, why = cpu.choose_threads()
        assert threads < cores, why
        assert cpu.busy_cores() >= 0.7  # the spinner is seen as (about) one busy core
    finally:
        spinner.terminate()
        spinner.join()


def test_the_user_s_thread_count_wins_and_a_chosen_one_is_reported(monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu.choose_threads() == (3, "OMP_NUM_THREADS")
    assert cpu.choose_threads(5) == (5, "--threads")
    lines: list[str] = []
    previous = torch.get_num_threads()
    try:
        assert cpu.apply_threads(2, lines.append) == 2 and torch.get_num_threads() == 2 and lines == []
        monkeypatch.delenv("OMP_NUM_THREADS")
        chosen = cpu.apply_threads(None, lines.append)
        assert lines == [f"threads: {chosen} ({cpu.usable_cores()} cores, " + lines[0].split(" cores, ")[1]]
        assert lines[0].endswith("busy with other work; --threads N to choose)")
    finally:
        torch.set_num_threads(previous)


def test_a_half_checkpoint_computes_in_float32_where_its_dtype_is_slow(monkeypatch):
    monkeypatch.setattr(cpu, "half_is_fast", lambda name: False)
    assert cpu.compute_dtype("bfloat16", None, on_cpu=True)[0] == "float32"
    assert cpu.compute_dtype("bfloat16", "bfloat16", on_cpu=True) == ("bfloat16", "--dtype")
    assert cpu.compute_dtype("bfloat16", None, on_cpu=False)[0] is None  # a GPU: the checkpoint's own
    assert cpu.compute_dtype("float32", None, on_cpu=True)[0] is None
    monkeypatch.setattr(cpu, "half_is_fast", lambda name: True)
    assert cpu.compute_dtype("bfloat16", None, on_cpu=True)[0] is None


def test_half_is_fast_measures_this_cpu():
    assert isinstance(cpu.half_is_fast("bfloat16"), bool)  # a timing, cached: the same answer twice
    assert cpu.half_is_fast("bfloat16") == cpu.half_is_fast("bfloat16")


def test_eval_of_a_bfloat16_checkpoint_says_which_dtype_it_computes_in(model_trio, run_cli, monkeypatch, capsys):
    monkeypatch.setattr(cpu, "half_is_fast", lambda name: False)
    base = model_trio("llama", "bfloat16")["base"]
    capsys.readouterr()  # building the fixture printed its own lines
    rc, out, err = run_cli("eval", base, "--suite", "lab", "--json", "--max-new-tokens", "2", "--threads", "1")
    assert rc == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith(f"compute dtype: float32 for {base.name} (checkpoint bfloat16;")
    assert json.loads(out)["settings"]["models"][str(base)]["dtype"] == "float32"
    rc, out, err = run_cli("eval", base, "--suite", "lab", "--json", "--max-new-tokens", "2", "--dtype", "bfloat16",
                           "--quiet")
    assert rc == 0 and err == "" and json.loads(out)["settings"]["models"][str(base)]["dtype"] == "bfloat16"


def test_a_heartbeat_line_comes_while_work_runs_and_stops_with_it():
    lines: list[str] = []
    step = {"n": 0}
    with Heartbeat(lambda: f"step {step['n']}", every=0.05, log=lines.append):
        for step["n"] in range(1, 5):
            time.sleep(0.06)
    count = len(lines)
    time.sleep(0.15)
    assert count >= 2 and len(lines) == count  # nothing after the block ended
    assert lines[0].startswith("… step ") and lines[0].endswith("s)")
    with Heartbeat(lambda: "x", every=0.01, log=lines.append, enabled=False):
        time.sleep(0.05)
    assert len(lines) == count


def test_train_without_a_progress_bar_prints_a_heartbeat(tmp_path, capsys):
    from persona_world import build_world
    from train_helpers import train_config, train_json

    world = build_world(tmp_path / "world", n_persona=16)
    config = train_config(tmp_path, world, heartbeat=0.05, max_steps=4)
    train_json(capsys, config)  # progress: false
    rc_err = capsys.readouterr().err
    assert rc_err == ""  # train_json read it: run again and keep stderr
    from skillgraft.cli import main

    assert main(["train", str(config), "--json", "--force"]) == 0
    err = capsys.readouterr().err
    assert "… training: " in err, err
    assert main(["train", str(config), "--json", "--force", "--quiet"]) == 0
    assert "… training" not in capsys.readouterr().err  # --quiet: no heartbeat either
