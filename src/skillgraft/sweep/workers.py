"""Running a sweep (`run_sweep`, what `sweep run` and `run FILE` call): its trials in this
process, or in several worker processes on one storage taking trials from one shared budget,
with a progress line per finished trial.

The invoking process is a worker itself; the others are spawned (a fresh interpreter each,
which reloads the sweep from its config file: the config is the interface between them).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

from skillgraft.errors import UserError
from skillgraft.sweep.config import Sweep, check_inputs, load_sweep
from skillgraft.sweep.recovery import fail_dead_local, mark_interrupted, requeue_interrupted
from skillgraft.sweep.results import tidy_outputs
from skillgraft.sweep.study import load, prepare_study
from skillgraft.sweep.trial import run_trial


class Budget:
    """The trials this invocation may still start, shared by its workers: a worker takes one
    before each trial, so a worker that started late (a spawned process importing torch) runs
    fewer and none waits for another's fixed share. `finished` counts every worker's trials."""

    def __init__(self, n_trials: int, context=multiprocessing):
        self.planned = n_trials
        self.left = context.Value("i", n_trials)
        self.finished = context.Value("i", 0)

    def take(self) -> bool:
        with self.left.get_lock():
            if self.left.value <= 0:
                return False
            self.left.value -= 1
            return True

    def finish(self) -> int:
        with self.finished.get_lock():
            self.finished.value += 1
            return self.finished.value


def optimize(sweep: Sweep, out: Path, url: str, name: str, budget: Budget, *, timeout: float | None,
             keep: bool, worker: int = 0, workers: int = 1, quiet: bool = False) -> None:
    """Run trials in this process (any queued retries first) while `budget` has some left."""
    from optuna.storages import fail_stale_trials

    code = code_fingerprint()
    study = load(sweep, url, name, worker)
    fail_dead_local(study)
    fail_stale_trials(study)
    mark_interrupted(study)

    ran, stopped = [], []
    started = time.time()

    def after(study, frozen):
        ran.append(frozen)
        done = budget.finish()
        if not quiet:
            print(progress_line(study, frozen, done, budget.planned, time.time() - started,
                                f"sweep[{worker + 1}/{workers}]" if workers > 1 else "sweep"),
                  file=sys.stderr, flush=True)
        if not keep:
            tidy_outputs(study, out)
        changed = changed_files(code, code_fingerprint())
        if changed:
            stopped.append(stop_for_changed_code(study, frozen, changed))
            study.stop()
        elif frozen.state.name == "FAIL" and frozen.user_attrs.get("result", {}).get("machine"):
            stopped.append(requeue_machine_failure(study, frozen))
            study.stop()
        elif not budget.take():
            study.stop()

    if not budget.take():
        return
    try:
        study.optimize(lambda trial: run_trial(trial, sweep, out, keep), n_trials=None, timeout=timeout,
                       callbacks=[after], catch=(Exception,), gc_after_trial=False)
    except KeyboardInterrupt:  # Optuna marked the running trial failed: queue it again, as for a kill
        requeue_interrupted(study)
        raise
    if stopped:
        raise UserError(stopped[0])
    none_completed(ran)


def requeue_machine_failure(study, frozen) -> str:
    """Queue a trial the machine failed (disk full) again, at most MAX_RETRY times; the error
    line that stops this worker: trials started on a full disk would fail the same way."""
    from skillgraft.sweep.study import MAX_RETRY

    error = frozen.user_attrs["result"]["error"]
    retries = frozen.user_attrs.get("machine_retries", 0)
    if retries >= MAX_RETRY:
        return f"trial {frozen.number}: {error}; not queued again ({MAX_RETRY} retries spent)"
    queue_again(study, frozen, machine_retries=retries + 1)
    return (f"trial {frozen.number}: {error}; the sweep stopped and queued the trial again: fix the machine "
            "(free disk space), then rerun the same command to continue")


def queue_again(study, frozen, **attrs) -> None:
    """Queue a failed trial's parameters to run next, marked as a retry of it."""
    study.enqueue_trial(frozen.params, user_attrs={**attrs, "retry_of": frozen.number}, skip_if_exists=False)


def code_fingerprint() -> dict[str, tuple[int, int]]:
    """{source file: (mtime, size)} of the skillgraft package this process runs: a sweep runs for
    hours, and its trials import some modules only when they first need them, so an edit or an
    upgrade meanwhile would mix the old code with the new (a trial failed that way, with an
    ImportError). A stat of each file: milliseconds, checked after every trial."""
    import skillgraft

    root = Path(skillgraft.__file__).parent
    return {str(path.relative_to(root)): (stat.st_mtime_ns, stat.st_size)
            for path in root.rglob("*.py") for stat in [path.stat()]}


def changed_files(before: dict, now: dict) -> list[str]:
    return sorted(name for name in before.keys() | now.keys() if before.get(name) != now.get(name))


def stop_for_changed_code(study, frozen, changed: list[str]) -> str:
    """The error line that stops a worker whose code changed on disk; a trial that failed
    meanwhile may have failed for the change, so it is queued again to run on the new code."""
    files = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    requeued = ""
    if frozen.state.name == "FAIL":
        queue_again(study, frozen)
        requeued = f" and queued trial {frozen.number} (failed) again"
    return (f"skillgraft's code changed while the sweep ran ({files}); the sweep stopped{requeued} so that "
            "no trial mixes old and new code: rerun the same command to continue on the new code "
            "(run long sweeps from an installation you do not edit)")


def progress_line(study, frozen, done: int, planned: int, seconds: float, label: str) -> str:
    """One line per finished trial: which of this run's trials, its state and values, the best
    value (one objective) or the front's size (several) so far, and the time left at this pace."""
    from optuna.trial import TrialState

    state = frozen.state.name
    values = "" if frozen.values is None else " " + " ".join(f"{v:.4g}" for v in frozen.values)
    error = frozen.user_attrs.get("result", {}).get("error")
    line = f"{label}: {done}/{planned} trial {frozen.number} {state}{values}"
    if error and state == "FAIL":
        line += f": {error}"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete and len(study.directions) == 1:
        best = study.best_trial
        line += f" | best {best.value:.4g} (#{best.number})"
    elif complete:
        line += f" | front {len(study.best_trials)}"
    left = planned - done
    if left > 0:
        line += f" | {seconds / done:.1f} s/trial, ~{_duration(seconds / done * left)} left"
    return line


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def none_completed(ran: list) -> None:
    """A run whose every trial failed is an error (exit 2), with the first trial's reason:
    otherwise a bug that fails every trial looks like a finished sweep."""
    from optuna.trial import TrialState

    if ran and not any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in ran):
        first = ran[0]
        reason = first.user_attrs.get("result", {}).get("error") or "no error recorded"
        raise UserError(f"none of the {len(ran)} trial(s) of this run completed; trial {first.number}: {reason}")


def _worker(args: tuple) -> None:
    """A spawned worker process: reload the sweep (the config is the interface) and optimise.
    It leaves with `os._exit` once its output is flushed: everything it made is in the storage
    and the trial folders, and a normal interpreter exit spends seconds freeing torch's modules."""
    path, overrides, out, url, name, budget, timeout, keep, worker, workers, threads, quiet = args
    import torch

    torch.set_num_threads(threads)
    code = 0
    try:
        optimize(load_sweep(path, overrides), Path(out), url, name, budget, timeout=timeout, keep=keep,
                 worker=worker, workers=workers, quiet=quiet)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:   # Ctrl-C reaches every worker; the invoking process says so once
        code = 130
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_workers(sweep: Sweep, path: str, overrides: list[str], out: Path, url: str, name: str, n_trials: int,
                workers: int, *, timeout: float | None, keep: bool, quiet: bool = False) -> None:
    """K workers on the same storage: this process and K-1 spawned ones, taking trials from one
    budget of N, with the cores other processes leave free split between them."""
    from skillgraft import cpu

    threads = cpu.split_threads(workers)
    context = multiprocessing.get_context("spawn")
    budget = Budget(n_trials, context)
    procs = [context.Process(target=_worker, args=((path, list(overrides), str(out), url, name, budget, timeout,
                                                    keep, i, workers, threads, quiet),), daemon=False)
             for i in range(1, min(workers, n_trials))]
    own_error = None
    try:
        for proc in procs:
            proc.start()
        try:
            optimize(sweep, out, url, name, budget, timeout=timeout, keep=keep, worker=0, workers=workers,
                     quiet=quiet)
        except UserError as exc:   # this worker's trials all failed: the others still finish theirs
            own_error = exc
        for proc in procs:
            proc.join()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join()
    failed = [p.exitcode for p in procs if p.exitcode]
    if own_error is not None:
        raise own_error
    if failed:
        raise UserError(f"{len(failed)} of {len(procs) + 1} workers failed (exit status {failed[0]}); "
                        "see their error lines above")


def run_sweep(path: str, overrides: list[str], out: Path, *, storage: str | None, name: str | None,
              n_trials: int | None, workers: int, timeout: float | None, keep: bool, new: bool,
              allow_changed_data: bool = False, quiet: bool = False):
    """`sweep run`: prepare (or resume) the study, run the trials, return the study."""
    if workers < 1:
        raise UserError(f"--workers {workers}: give at least 1")
    if n_trials is not None and n_trials < 1:
        raise UserError(f"--n-trials {n_trials}: give at least 1")
    sweep = load_sweep(path, overrides)
    check_inputs(sweep)
    out = Path(out).resolve()   # trials compare their paths with the recipe's resolved output
    name = name or out.name
    url = prepare_study(sweep, out, storage, name, new=new, allow_changed_data=allow_changed_data)
    n = n_trials if n_trials is not None else sweep.config.n_trials
    if workers == 1:
        optimize(sweep, out, url, name, Budget(n), timeout=timeout, keep=keep, quiet=quiet)
    else:
        run_workers(sweep, path, list(overrides), out, url, name, n, workers, timeout=timeout, keep=keep,
                    quiet=quiet)
    return load(sweep, url, name), url
