"""Atomic publication of an output folder.

Outputs are written into a hidden temporary sibling of the destination and renamed into
place only when complete, so a crash, a Ctrl-C, a full disk or a bad tensor never leaves a
half-written model where a user (or a later `from_pretrained`) would pick it up.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path

from skillgraft.errors import UserError

DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def check_output(out: Path, inputs: list[Path], *, force: bool, option: str = "-o") -> None:
    """Refuse outputs that would clobber or nest inside an input, or a non-empty folder."""
    out_resolved = out.resolve()
    for source in inputs:
        source_resolved = Path(source).resolve()
        if out_resolved == source_resolved or out_resolved.is_relative_to(source_resolved):
            raise UserError(f"{option} {out} is inside the input folder {source}; choose another output")
        if source_resolved.is_relative_to(out_resolved):
            raise UserError(f"{option} {out} contains the input folder {source}; choose another output")
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"{option} {out} exists and is not empty; pass --force to replace it")


class AtomicFolder:
    """Context manager: yields a temporary folder, publishes it to `out` on success."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.temp = self.out.parent / f".{self.out.name}.partial-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> Path:
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.temp.mkdir()
        except OSError as exc:
            raise UserError(f"cannot create output folder next to {self.out} ({exc.strerror or exc})") from None
        return self.temp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.temp, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno in DISK_FULL:
                raise UserError(f"disk full while writing {self.out}; nothing was published "
                                f"(the partial output was removed)") from None
            if isinstance(exc, OSError):
                raise UserError(f"cannot write {self.out} ({exc.strerror or exc}); nothing was published") from None
            return False
        try:
            self._publish()
        except OSError as err:
            shutil.rmtree(self.temp, ignore_errors=True)
            raise UserError(f"cannot publish {self.out} ({err.strerror or err})") from None
        return False

    def _publish(self) -> None:
        if self.out.exists():  # --force: swap, then remove the old folder
            old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.out, old)
            os.rename(self.temp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.temp, self.out)
