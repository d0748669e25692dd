"""Atomic publication of output folders and files.

Outputs are written into a hidden temporary sibling of the destination and renamed into
place only when complete, so a crash, a Ctrl-C, a full disk or a bad tensor never leaves a
half-written model where a user (or a later `from_pretrained`) would pick it up.

A run that is killed outright (`kill -9`, an out-of-memory kill) cannot clean up after
itself, so every partial folder has a lock file beside it (`.OUT.partial-ID.lock`) that its
run holds with `flock` while it writes; the kernel releases the lock when the process dies,
whatever killed it. The next run writing the same output finds the lock free, knows the
writer is gone, and removes its leftovers; a lock still held means another live run is
writing that output, and its files are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import uuid
from pathlib import Path

from skillgraft.errors import MachineError, UserError

DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
MANIFEST = "skillgraft.json"
FILE_MODE = 0o644


def check_output(out: Path, inputs: list[Path], *, force: bool, option: str = "-o") -> None:
    """Refuse outputs that would clobber or nest inside an input, a non-empty folder without
    --force, and (even with --force) a folder skillgraft did not write."""
    out = Path(out)
    out_resolved = out.resolve()
    for source in inputs:
        source_resolved = Path(source).resolve()
        if out_resolved == source_resolved or out_resolved.is_relative_to(source_resolved):
            raise UserError(f"{option} {out} is inside the input folder {source}; choose another output")
        if source_resolved.is_relative_to(out_resolved):
            raise UserError(f"{option} {out} contains the input folder {source}; choose another output")
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UserError(f"{option} {out} exists and is not empty; pass --force to replace it")
        if not (out / MANIFEST).is_file():
            raise UserError(f"{option} {out} holds files skillgraft did not write (no {MANIFEST}); --force replaces "
                            "only skillgraft's own outputs: remove it yourself or choose another output")


class AtomicFolder:
    """Context manager: yields a temporary folder, publishes it to `out` on success.

    `force`: an `out` that exists at publication is replaced (the verb's `--force`, checked
    against its contents by `check_output` first); without it an `out` that appeared while
    this run was writing is never replaced, and the run fails with nothing published."""

    def __init__(self, out: str | Path, *, force: bool = False, temp: str | Path | None = None):
        self.out = Path(out)
        self.force = force
        self.id = uuid.uuid4().hex[:8]
        self.temp = Path(temp) if temp is not None else self.out.parent / f".{self.out.name}.partial-{self.id}"
        self.lock_path = self.temp.with_name(self.temp.name + ".lock")
        self._lock_fd: int | None = None

    def __enter__(self) -> Path:
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(self.out)
            self._lock()
            self.temp.mkdir(exist_ok=self.temp.is_dir() and not any(self.temp.iterdir()))
        except OSError as exc:
            self._unlock()
            raise UserError(f"cannot create output folder next to {self.out} ({exc.strerror or exc})") from None
        return self.temp

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is not None:
                shutil.rmtree(self.temp, ignore_errors=True)
                if isinstance(exc, OSError) and exc.errno in DISK_FULL:
                    raise MachineError(f"disk full while writing {self.out}; nothing was published "
                                    f"(the partial output was removed)") from None
                if isinstance(exc, OSError):
                    raise UserError(f"cannot write {self.out} ({exc.strerror or exc}); nothing was published") from None
                return False
            try:
                share_modes(self.temp)
                _publish(self.temp, self.out, self.id, self.force)
            except UserError:
                shutil.rmtree(self.temp, ignore_errors=True)
                raise
            except OSError as err:
                shutil.rmtree(self.temp, ignore_errors=True)
                raise UserError(f"cannot publish {self.out} ({err.strerror or err})") from None
            return False
        finally:
            self._unlock()

    def _lock(self) -> None:
        """The lock file appears under its name already locked: it is written and flocked under
        a name no cleanup looks at, then renamed into place, so a concurrent run's
        `remove_stale_partials` can never find it unlocked, take it and delete it."""
        fd, staging = tempfile.mkstemp(prefix=self.lock_path.name + ".", dir=self.lock_path.parent)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv, "output": str(self.out)}
            os.write(fd, json.dumps(owner).encode())
            os.chmod(staging, FILE_MODE)
            os.rename(staging, self.lock_path)
        except BaseException:
            os.close(fd)
            Path(staging).unlink(missing_ok=True)
            raise
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                self.lock_path.unlink()
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None


DIR_MODE = 0o755
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-[0-9a-f]{8}$")


def published_name(folder: Path) -> str:
    """The name `folder` will have once published (a model card's title written inside the
    hidden temporary folder must not be `.OUT.partial-1a2b3c4d`)."""
    match = _PARTIAL.match(Path(folder).name)
    return match["name"] if match else Path(folder).name


def share_modes(folder: Path) -> None:
    """Files 0644 and folders 0755, whatever wrote them: some writers (safetensors through
    transformers' save_pretrained) create their files 0600, which another user of a shared
    model folder could not read."""
    os.chmod(folder, DIR_MODE)
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)


def _publish(temp: Path, out: Path, run_id: str, force: bool) -> None:
    """Rename `temp` to `out`; an existing `out` (--force) is swapped out first and deleted
    after, or put back if the second rename fails."""
    if not out.exists():
        try:
            os.rename(temp, out)
            return
        except OSError as exc:  # another run published `out` between the check and the rename
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
    empty = out.is_dir() and not any(out.iterdir())
    if not force and not empty:
        raise UserError(f"{out} appeared while this run was writing it (another run?); nothing was published: "
                        "pass --force to replace it")
    old = out.parent / f".{out.name}.old-{run_id}"
    os.rename(out, old)
    try:
        os.rename(temp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_partials(out: Path) -> list[str]:
    """Remove what killed runs left beside `out`; refuse when a live run is writing `out`."""
    removed = []
    for lock in sorted(out.parent.glob(f".{out.name}.partial-*.lock")):
        partial = lock.with_name(lock.name.removesuffix(".lock"))
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:  # its run just finished
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(lock)
                raise UserError(f"another skillgraft run (pid {owner.get('pid', '?')} on {owner.get('host', '?')}) is "
                                f"writing {out} right now; wait for it to finish or choose another output") from None
            run_id = partial.name.rsplit("-", 1)[-1]
            old = out.parent / f".{out.name}.old-{run_id}"
            if old.is_dir() and not out.exists():  # killed between the two renames of --force: put it back
                os.rename(old, out)
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
            lock.unlink(missing_ok=True)
            removed.append(partial.name)
        finally:
            os.close(fd)
    if removed:
        print(f"note: removed {len(removed)} partial output(s) of killed runs beside {out}: {', '.join(removed)}",
              file=sys.stderr)
    for orphan in sorted(out.parent.glob(f".{out.name}.partial-*")):
        if orphan.is_dir() and not orphan.with_name(orphan.name + ".lock").exists():
            print(f"note: {orphan} was left by an interrupted run that held no lock (an older skillgraft); "
                  f"nothing uses it: delete it with `rm -r {orphan}`", file=sys.stderr)
    return removed


def _owner(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8"):
    """Yield a handle on a temporary file beside `path`; rename it into place (0644) on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_file_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write a whole file atomically (a reader never sees half of it)."""
    with atomic_file(path, "wb" if isinstance(data, bytes) else "w") as handle:
        handle.write(data)
    return Path(path)
