"""`skillgraft.json`: the provenance every folder the tool writes carries.

It records what the folder is (vector / model / adapter), the tool version, the exact
inputs (paths and config hashes), every option, what was skipped and why, and a sha256 per
file, so `skillgraft verify` can prove a folder is what was written.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

from skillgraft import __version__
from skillgraft.checkpoint.folder import sha256_file
from skillgraft.errors import UserError

MANIFEST = "skillgraft.json"


def input_record(role: str, checkpoint) -> dict:
    """What identifies one input checkpoint: where it was and which config it had."""
    return {"role": role, "path": str(Path(checkpoint.path).resolve()),
            "config_sha256": checkpoint.config_sha256, "model_type": checkpoint.model_type,
            "format": checkpoint.format}


def write_manifest(folder: Path, *, kind: str, inputs: list[dict], options: dict,
                   file_sha256: dict[str, str], extra: dict | None = None) -> dict:
    """Hash every file not already hashed, then write skillgraft.json into `folder`."""
    hashes = dict(file_sha256)
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and relative != MANIFEST and relative not in hashes:
            hashes[relative] = sha256_file(path)
    manifest = {
        "kind": kind,
        "tool": "skillgraft",
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": ["skillgraft", *sys.argv[1:]] if Path(sys.argv[0]).name.startswith("skillgraft") else None,
        "inputs": inputs,
        "options": options,
        **(extra or {}),
        "files": {name: hashes[name] for name in sorted(hashes)},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{folder} has no {MANIFEST}; it was not written by skillgraft")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def verify(folder: str | Path) -> dict:
    """Recompute every file's sha256 against the manifest; report mismatches and strays."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    manifest = read_manifest(folder)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise UserError(f"{folder / MANIFEST}: has no 'files' table")
    mismatched, missing = [], []
    for name, expected in files.items():
        path = folder / name
        if not path.resolve().is_relative_to(folder.resolve()):
            raise UserError(f"{folder / MANIFEST}: file entry {name!r} escapes the folder")
        if not path.is_file():
            missing.append(name)
        elif sha256_file(path) != expected:
            mismatched.append(name)
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    unlisted = sorted(present - set(files) - {MANIFEST})
    return {"path": str(folder), "kind": manifest.get("kind"), "files": len(files),
            "ok": not mismatched and not missing, "mismatched": mismatched, "missing": missing,
            "unlisted": unlisted}
