"""The default SQLite storage under concurrent workers: a queued trial is claimed by one
worker only (the knowledge sweep once ran enqueued trial 0 in both of its workers)."""

from __future__ import annotations

import multiprocessing

import pytest

optuna = pytest.importorskip("optuna")

ENQUEUED = 40


def _claim(url: str) -> None:
    from skillgraft.sweep.study import open_storage, quiet_optuna

    quiet_optuna()
    study = optuna.load_study(study_name="race", storage=open_storage(url, heartbeat=10))
    study.optimize(lambda trial: trial.suggest_float("a", 0, 1), n_trials=ENQUEUED // 2)


def claims(url: str) -> list:
    from skillgraft.sweep.study import open_storage, quiet_optuna

    quiet_optuna()
    study = optuna.create_study(study_name="race", storage=open_storage(url, heartbeat=10))
    for k in range(ENQUEUED):
        study.enqueue_trial({"a": k / ENQUEUED})
    procs = [multiprocessing.get_context("spawn").Process(target=_claim, args=(url,)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    assert [proc.exitcode for proc in procs] == [0, 0]
    return optuna.load_study(study_name="race", storage=url).trials


def test_two_workers_claim_each_queued_trial_once(tmp_path):
    found = claims(f"sqlite:///{tmp_path / 'study.db'}")
    assert len(found) == ENQUEUED and all(t.state.name == "COMPLETE" for t in found)
    assert sorted(t.params["a"] for t in found) == [k / ENQUEUED for k in range(ENQUEUED)]
