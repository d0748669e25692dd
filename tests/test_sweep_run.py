"""`skillgraft sweep run` on the shipped lab models: the search finds the known optimum, a killed
trial is retried once and nothing is lost, workers share one storage without duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

pytest.importorskip("optuna")

from sweep_helpers import SKILLGRAFT, Postgres, trials, wait_for, write_sweep  # noqa: E402


def test_search_finds_the_known_optimum_region(run_cli, tmp_path):
    # docs/lab.md, shipped seed: held-out B accuracy 0.390 at scale 0.5, 0.825 at 1.0, 0.725 at 1.5.
    path = write_sweep(tmp_path / "s.yaml")
    status, out, err = run_cli("sweep", "run", path, "-o", tmp_path / "run", "--n-trials", "14", "--json")
    assert status == 0, err[-2000:]
    result = json.loads(out)
    assert result["trials"] == {"COMPLETE": 14}
    (best,) = result["best"]
    assert 0.75 <= best["params"]["vectors.0.scale"] <= 1.3 and best["values"][0] >= 0.85, result
    study = trials(tmp_path / "run")
    assert max(t.values[0] for t in study) == best["values"][0]
    # one progress line per trial: which of the run's, its value, the best so far, the time left
    lines = [line for line in err.splitlines() if line.startswith("sweep: ")]
    assert len(lines) == 14 and lines[0].startswith("sweep: 1/14 trial 0 COMPLETE ")
    assert all(" | best " in line for line in lines) and "left" in lines[0] and "left" not in lines[-1]
    best_so_far = max(t.values[0] for t in study)
    assert lines[-1].endswith(f"| best {best_so_far:.4g} (#{best['number']})")
    # only the best trial keeps its model; every trial keeps its recipe
    kept = sorted(p.parent.name for p in (tmp_path / "run" / "trials").glob("*/output"))
    assert kept == [f"{best['number']:04d}"]
    assert len(list((tmp_path / "run" / "trials").glob("*/recipe.yaml"))) == 14


def test_run_dispatches_a_sweep_file_as_sweep_run(run_cli, tmp_path, monkeypatch):
    path = write_sweep(tmp_path / "s.yaml")
    monkeypatch.chdir(tmp_path)   # -o relative to the current directory, as the docs' commands give it
    status, out, err = run_cli("run", path, "--set", "n_trials=2", "-o", "run", "--json", "--quiet")
    assert status == 0, err[-2000:]
    assert "sweep:" not in err   # --quiet: no progress lines
    assert json.loads(out)["trials"] == {"COMPLETE": 2}
    states = [json.loads(p.read_text())["state"] for p in (tmp_path / "run").glob("trials/*/result.json")]
    assert states == ["COMPLETE", "COMPLETE"], states
    assert len(trials(tmp_path / "run")) == 2
    status, out, err = run_cli("run", path)
    assert status == 2 and err.startswith("error:") and "needs -o DIR" in err


def test_kill_during_a_trial_then_rerun_retries_it_once(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", heartbeat=60)  # a heartbeat would not expire during the test
    out = tmp_path / "run"
    command = [SKILLGRAFT, "sweep", "run", str(path), "-o", str(out)]
    proc = subprocess.Popen([*command, "--n-trials", "3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        running = wait_for(lambda: (out / "trials" / "0001" / "recipe.yaml").exists()
                           and not (out / "trials" / "0001" / "result.json").exists(), timeout=240)
        assert running, "trial 1 never started"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    before = {t.number: t.state.name for t in trials(out)}
    assert before == {0: "COMPLETE", 1: "RUNNING"}
    # rerun at once: the killed trial's process on this host is gone, so it is failed and retried
    # now, without waiting for its heartbeat to go stale
    done = subprocess.run([*command, "--n-trials", "3", "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    after = trials(out)
    states = {t.number: t.state.name for t in after}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE", 3: "COMPLETE", 4: "COMPLETE"}
    retry = after[2]
    assert retry.system_attrs["failed_trial"] == 1 and retry.params == after[1].params  # same parameters
    assert after[0].values == trials(out)[0].values                                     # nothing lost
    assert [t.system_attrs.get("failed_trial") for t in after].count(1) == 1           # retried once
    killed = json.loads((out / "trials" / "0001" / "result.json").read_text())
    assert killed["state"] == "FAIL" and "interrupted" in killed["error"] and "queued again" in killed["error"]


def _two_workers(tmp_path, storage=None):
    path = write_sweep(tmp_path / "s.yaml", sampler={"name": "random"})
    out = tmp_path / "run"
    name = f"run-{os.getpid()}-{time.time_ns()}"  # a server that outlives the test may hold older studies
    extra = ["--storage", storage] if storage else []
    done = subprocess.run([SKILLGRAFT, "sweep", "run", str(path), "-o", str(out), "--n-trials", "6", "--workers", "2",
                           "--study", name, "--keep", "--json", *extra], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    found = trials(out, storage, name)
    numbers = [t.number for t in found]
    assert sorted(numbers) == list(range(6)) and all(t.state.name == "COMPLETE" for t in found)
    hosts = {t.user_attrs["trial"]["host"] for t in found}
    # one budget of trials: the spawned worker takes what is left once it has started (on
    # trials this short, maybe none), so at most two processes ran them
    assert 1 <= len(hosts) <= 2
    folders = sorted(p.name for p in (out / "trials").iterdir())
    assert folders == [f"{n:04d}" for n in range(6)]


def test_two_workers_on_sqlite_give_no_duplicate_trials(tmp_path):
    _two_workers(tmp_path)


@pytest.fixture(scope="module")
def postgres():
    server = Postgres()
    if server.url is None:
        print(f"PostgreSQL tests skipped: {server.reason}")
        pytest.skip(server.reason)
    yield server.url
    server.stop()


def test_two_workers_on_postgresql_give_no_duplicate_trials(tmp_path, postgres):
    _two_workers(tmp_path, postgres)


@pytest.mark.slow
def test_ctrl_c_requeues_the_running_trial(tmp_path):
    path = write_sweep(tmp_path / "s.yaml")
    out = tmp_path / "run"
    command = [SKILLGRAFT, "sweep", "run", str(path), "-o", str(out)]
    proc = subprocess.Popen([*command, "--n-trials", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    running = wait_for(lambda: (out / "trials" / "0000" / "recipe.yaml").exists(), timeout=240)
    assert running, "trial 0 never started"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "error: interrupted", err[-1000:]
    found = trials(out)
    assert [t.state.name for t in found] == ["FAIL", "WAITING"] and found[1].params == found[0].params
    assert json.loads((out / "trials" / "0000" / "result.json").read_text())["state"] == "FAIL"
