"""Trials whose process is gone: failed, given a result that says so, and queued again.

Three ways a trial's process goes away: Ctrl-C in this process (Optuna marks the trial
failed), a kill -9 or an out-of-memory kill of a process on this host (the trial stays
RUNNING: its worker can no longer say anything), and a worker on another host that stops
(its heartbeat stops; Optuna's `fail_stale_trials` fails it after the grace period). The
first two are caught at once here, without waiting for a heartbeat to expire: a trial
records `host:pid` when it starts, and a RUNNING trial whose pid on this host no longer
exists is dead. Each is retried with the same parameters through the callback a stale
heartbeat uses (at most 3 times); its `result.json` says whether it was queued again.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from skillgraft.sweep.folders import finish, rebuild_command
from skillgraft.sweep.study import MAX_RETRY


def _retry(study, frozen) -> None:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, frozen)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def fail_dead_local(study) -> list[int]:
    """RUNNING trials started on this host by a process that no longer exists: failed and queued
    again now (a heartbeat would take its grace period). Returns their numbers."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    dead = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        where = trial.user_attrs.get("trial", {}).get("host", "")
        name, _, pid = where.rpartition(":")
        if name == host and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            _retry(study, study._storage.get_trial(trial._trial_id))
            dead.append(trial.number)
    return dead


def requeue_interrupted(study) -> None:
    """Queue the trials this process was running when Ctrl-C came (failed, no result yet) again
    with the same parameters, through the callback a stale heartbeat uses."""
    from optuna.trial import TrialState

    me = f"{socket.gethostname()}:{os.getpid()}"
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        folder = Path(trial.user_attrs.get("trial", {}).get("dir", "."))
        if trial.user_attrs.get("trial", {}).get("host") == me and not (folder / "result.json").exists():
            _retry(study, trial)
    mark_interrupted(study)


def mark_interrupted(study) -> None:
    """Trials that failed without a result (their process was killed) get one, and lose their
    half-written output; the recipe stays. The result says whether a retry was queued."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    for trial in trials:
        if trial.state != TrialState.FAIL:
            continue
        folder = Path(trial.user_attrs.get("trial", {}).get("dir", ""))
        if trial.user_attrs.get("trial") and folder.is_dir() and not (folder / "result.json").exists():
            again = "queued again" if trial.number in retried else f"not queued again ({MAX_RETRY} retries spent)"
            finish(folder, {"number": trial.number, "params": trial.params, "rebuild": rebuild_command(folder),
                            "state": "FAIL", "error": f"interrupted (killed, or Ctrl-C); {again}"},
                   keep_output=False)
