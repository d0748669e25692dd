"""Where a lab study writes, one way for `lab demo`, `lab knowledge` and `lab real`.

- With `--out`, everything goes into a temp sibling published by rename at the end
  (`checkpoint.AtomicFolder`): an interrupted study never leaves a half-written folder under
  the final name. Without it, a throwaway temp folder.
- Each finished cell is also kept, at once, in `OUT.finished-cells/` (`keep`), with a record
  of the study it belongs to. A study that fails anywhere (a cell, the summary, publication)
  or is stopped leaves them there, and `--resume` continues from them (`finished`). They are
  removed only once OUT is published. Without `--resume` an earlier run's cells are never
  silently reused or deleted: the user is told to continue them or remove them.
- `write` puts the results, the generations and the manifest in the folder.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from skillgraft.checkpoint import AtomicFolder, write_file_atomic, write_manifest
from skillgraft.errors import UserError

STUDY_RECORD = "study.json"   # in OUT.finished-cells/: which study the cells belong to


def cell_file(cell) -> str:
    """The file a finished cell (anything with a `name` and a `seed`) is kept in."""
    return f"{cell.name}-seed{cell.seed}.json"


def finished_cells_dir(out: Path | None) -> Path | None:
    return None if out is None else out.with_name(out.name + ".finished-cells")


class StudyFolder:
    """A study's output folder (see the module doc). `record`: what must be the same for
    finished cells to be reused (the plan, the model, the tool's version); None keeps no cells."""

    def __init__(self, out: Path | None, *, force: bool = False, record: dict | None = None, resume: bool = False,
                 prefix: str = "skillgraft-study-"):
        self.out, self.force, self.resume, self.prefix = out, force, resume, prefix
        self.record = json.loads(json.dumps(record)) if record is not None else None   # as it reads back
        self.kept = finished_cells_dir(out) if record is not None else None
        self.finished: dict[str, dict] = {}
        self._folder = None
        self.path: Path | None = None

    def __enter__(self) -> "StudyFolder":
        self.finished = self._start_keeping()
        self._folder = (AtomicFolder(self.out, force=self.force) if self.out is not None
                        else tempfile.TemporaryDirectory(prefix=self.prefix))
        try:
            self.path = Path(self._folder.__enter__())
        except BaseException:
            self._drop_empty_kept()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self._folder.__exit__(exc_type, exc, tb)   # publishes OUT, or removes the temp folder
        except BaseException:
            self._note_kept()
            raise
        if exc_type is not None:
            self._note_kept()
            return False
        if self.kept is not None:
            shutil.rmtree(self.kept, ignore_errors=True)   # published: the cells are in OUT
        return False

    def keep(self, name: str, payload: dict) -> None:
        """Keep one finished cell (`name`: its file name) until OUT is published."""
        if self.kept is not None:
            write_file_atomic(self.kept / name, json.dumps(payload) + "\n")

    def write(self, payload: dict, generations, *, kind: str = "study", inputs: list | None = None,
              options: dict | None = None, extra: dict | None = None, also=None) -> None:
        """results.json, generations.jsonl (one object per line), what `also(folder)` adds (plots,
        reports), then the manifest over all of it; nothing without --out."""
        if self.out is None:
            return
        (self.path / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        with (self.path / "generations.jsonl").open("w") as handle:
            for generation in generations:
                handle.write(json.dumps(generation, ensure_ascii=False) + "\n")
        if also is not None:
            also(self.path)
        write_manifest(self.path, kind=kind, inputs=inputs or [], options=options or {}, extra=extra or {})

    def _start_keeping(self) -> dict[str, dict]:
        """Prepare `OUT.finished-cells/` and return the finished cells to reuse (--resume)."""
        if self.kept is None:
            if self.resume:
                raise UserError("--resume needs --out (the finished cells are kept beside it)")
            return {}
        kept = self.kept
        if not self.resume:
            if kept.exists():
                raise UserError(f"{kept} holds the finished cells of an earlier run of this study: pass --resume to "
                                f"continue from them, or remove the folder to start over")
            kept.mkdir()
            write_file_atomic(kept / STUDY_RECORD, json.dumps(self.record, indent=2) + "\n")
            return {}
        if not (kept / STUDY_RECORD).is_file():
            raise UserError(f"--resume: {kept} does not exist or holds no {STUDY_RECORD}; there is nothing to resume "
                            "(run without --resume)")
        theirs = json.loads((kept / STUDY_RECORD).read_text())
        if theirs != self.record:
            differ = ", ".join(k for k in self.record if theirs.get(k) != self.record[k])
            raise UserError(f"--resume: the finished cells in {kept} come from a different study ({differ} differ); "
                            "rerun with the same options, or remove the folder to start over")
        finished = {}
        for file in sorted(kept.glob("*.json")):
            if file.name == STUDY_RECORD:
                continue
            try:
                finished[file.name] = json.loads(file.read_text())
            except ValueError:  # never happens with atomic writes; a file a user edited is run again
                continue
        print(f"note: resuming from {len(finished)} finished cells in {kept}", file=sys.stderr)
        return finished

    def _note_kept(self) -> None:
        """After a failure: say where the finished cells are, or remove an empty keeping folder."""
        if self.kept is None or not self.kept.is_dir():
            return
        count = sum(1 for f in self.kept.glob("*.json") if f.name != STUDY_RECORD)
        if count:
            print(f"note: the study did not finish; its {count} finished cells are kept in {self.kept}: rerun with "
                  "--resume to continue", file=sys.stderr)
        else:
            self._drop_empty_kept()

    def _drop_empty_kept(self) -> None:
        if self.kept is not None and not self.resume and self.kept.is_dir() and \
                not any(f.name != STUDY_RECORD for f in self.kept.glob("*.json")):
            shutil.rmtree(self.kept, ignore_errors=True)
