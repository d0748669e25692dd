"""A line every 30 s while long work runs without a progress bar on a terminal.

A training run with `progress: false`, or one whose stderr goes to a log file, printed nothing
for 15 minutes on a busy machine (issue 24): no way to tell slow from stuck. `Heartbeat` is a
daemon thread that prints `status()` with the elapsed time every `every` seconds until the
block ends; it costs nothing while it waits.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable

EVERY_SECONDS = 30.0


def bar_visible(progress: bool) -> bool:
    """Whether a progress bar would be seen: asked for, and stderr is a terminal."""
    return progress and sys.stderr.isatty()


def _elapsed(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Heartbeat:
    """`with Heartbeat(lambda: "step 3/40"):` prints "… step 3/40 (1m30s)" every `every` s."""

    def __init__(self, status: Callable[[], str], *, every: float = EVERY_SECONDS,
                 log: Callable[[str], None] | None = None, enabled: bool = True):
        self.status, self.every, self.enabled = status, every, enabled and every > 0
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Heartbeat":
        if self.enabled:
            self._start = time.monotonic()
            self._thread = threading.Thread(target=self._beat, name="skillgraft-heartbeat", daemon=True)
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.log(f"… {self.status()} ({_elapsed(time.monotonic() - self._start)})")
            except Exception:  # a status that cannot be read now is skipped, never fatal
                continue

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
