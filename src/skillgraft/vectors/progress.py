"""Progress on stderr for long streaming jobs: tensors done, bytes/s, time left."""

from __future__ import annotations

import sys


class Progress:
    """A rich progress bar on stderr (nothing at all when quiet)."""

    def __init__(self, title: str, *, total_bytes: int, total_tensors: int, quiet: bool):
        self.title = title
        self.total_tensors = total_tensors
        self.done_tensors = 0
        self._bar = None
        if quiet:
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
        if self._bar is not None:
            self._bar.update(self._task, advance=nbytes, tensors=f"{self.done_tensors}/{self.total_tensors} tensors")

    def __exit__(self, *exc) -> bool:
        if self._bar is not None:
            self._bar.stop()
        return False
