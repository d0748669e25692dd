"""Progress on stderr for long streaming jobs: tensors done, bytes/s, time left."""

from __future__ import annotations

import sys
import time


class Progress:
    """A live bar on a terminal's stderr; one summary line when stderr is a log file;
    nothing when quiet. A failed run leaves no bar behind its `error:` line."""

    def __init__(self, title: str, *, total_bytes: int, total_tensors: int, quiet: bool):
        self.title = title
        self.total_tensors = total_tensors
        self.total_bytes = total_bytes
        self.done_tensors = 0
        self.done_bytes = 0
        self.quiet = quiet
        self._bar = None
        self._started = time.perf_counter()
        if quiet or not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress as RichProgress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
            TransferSpeedColumn(), TextColumn("{task.fields[tensors]}"), TimeRemainingColumn(),
            console=Console(file=sys.stderr), transient=False,
        )
        self._task = self._bar.add_task(title, total=max(total_bytes, 1), tensors=f"0/{total_tensors} tensors")

    def __enter__(self) -> "Progress":
        if self._bar is not None:
            self._bar.start()
        return self

    def advance(self, nbytes: int) -> None:
        self.done_tensors += 1
        self.done_bytes += nbytes
        if self._bar is not None:
            self._bar.update(self._task, advance=nbytes, tensors=f"{self.done_tensors}/{self.total_tensors} tensors")

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._bar is not None:
            if exc_type is not None:
                self._bar.live.transient = True
            self._bar.stop()
        elif exc_type is None and not self.quiet:
            seconds = time.perf_counter() - self._started
            print(f"{self.title}: {self.done_tensors} tensors, {self.done_bytes / 1e6:,.1f} MB in {seconds:.1f} s "
                  f"({self.done_bytes / 1e6 / max(seconds, 1e-9):,.0f} MB/s)", file=sys.stderr)
        return False
