"""Running a study's cells on worker processes (`--jobs`), shared by the lab's studies.

Why processes and one torch thread each: the cells are independent training runs, and on a
small shared CPU two single-threaded processes finish more work than one two-threaded
process (thread hand-offs dominate small kernels, and a busy neighbour makes them worse).
Every cell is a pure function of its seed, so results never depend on the number of jobs.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable

from skillgraft.checkpoint.publish import check_output
from skillgraft.errors import UserError


class Progress:
    """A tqdm bar over the study's cells on stderr, and one line per finished cell
    (the lines survive in logs, the bar does not). `--quiet` silences both."""

    def __init__(self, total: int, quiet: bool, label: str):
        from tqdm.auto import tqdm

        self.quiet, self.start, self.label = quiet, time.time(), label
        self.bar = tqdm(total=total, desc=f"{label} cells", file=sys.stderr, disable=quiet, leave=False)

    def step(self, what: str) -> None:
        self.bar.update(1)
        if not self.quiet:
            self.bar.write(f"[{self.label}] {self.bar.n}/{self.bar.total} {what} ({time.time() - self.start:.0f} s)",
                           file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def init_worker(quiet: bool) -> None:
    """Each worker process: one torch thread (the cells are too small to gain from more)."""
    from skillgraft.lab.train import set_threads

    set_threads(1)
    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()   # "Writing model shards" bars of saved models


class InlineExecutor:
    """`--jobs 1`: run each submitted cell at once, in this process (same results, no workers)."""

    def __init__(self, quiet: bool):
        init_worker(quiet)

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:   # re-raised by future.result(), as a pool would
            future.set_exception(exc)
        return future

    def shutdown(self, cancel_futures: bool = False) -> None:
        pass


def make_executor(jobs: int, quiet: bool):
    """A spawn-context process pool of `jobs` workers, or the inline executor for one job."""
    if jobs > 1:
        return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init_worker, initargs=(quiet,))
    return InlineExecutor(quiet)


def run_cells(jobs: int, quiet: bool, next_cell: Callable[[], tuple | None],
              finished: Callable[[object, object], None]) -> None:
    """Keep `jobs` cells running on worker processes until none is left: the one loop of the
    lab's studies. `next_cell()` gives `(cell, fn, *args)` for a cell that can start now (a
    study puts cells whose inputs just finished first) or None; `finished(cell, result)`
    records a result, which may make more cells ready. A failed cell, Ctrl-C or SIGTERM stops
    every other cell at once and is raised."""
    executor = make_executor(jobs, quiet)
    pending: dict[Future, object] = {}

    def fill() -> None:
        while len(pending) < jobs:
            task = next_cell()
            if task is None:
                return
            cell, fn, *args = task
            pending[executor.submit(fn, *args)] = cell

    try:
        fill()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                cell = pending.pop(future)
                finished(cell, future.result())
            fill()
    except BaseException:   # a failed cell, Ctrl-C or SIGTERM: stop the other cells now
        stop_workers(executor)
        raise
    finally:
        executor.shutdown(cancel_futures=True)


def stop_workers(executor) -> None:
    """Kill running worker processes instead of waiting minutes for their cells to finish
    (`terminate_workers` exists from Python 3.14; before, the pool's process table)."""
    terminate = getattr(executor, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        process.terminate()


def default_jobs() -> int:
    """Worker processes by default: one per usable CPU, at most 8."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def check_counts(seeds: int, jobs: int | None, max_seeds: int) -> None:
    """Refuse a number of seeds or worker processes out of range, before any work."""
    if not 1 <= seeds <= max_seeds:
        raise UserError(f"--seeds {seeds}: give a number of seeds between 1 and {max_seeds}")
    if jobs is not None and not 1 <= jobs <= 64:
        raise UserError(f"--jobs {jobs}: give a number of worker processes between 1 and 64")


def check_out(out: Path | None, force: bool) -> None:
    """Reject a study's --out that cannot be published before any training starts."""
    if out is None:
        return
    check_output(out, [], force=force, option="--out")
    if not out.parent.exists():
        raise UserError(f"--out {out}: parent folder {out.parent} does not exist")
