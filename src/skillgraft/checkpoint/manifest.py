"""`skillgraft.json`: the provenance every folder the tool writes carries.

It records what the folder is (vector / model / adapter, or a run/study/build folder that
holds several), the tool version, the exact inputs (paths, config or file hashes, the Hub
commit when an input came from the Hub), every option, what was skipped and why, and a
sha256 per file, so `skillgraft verify` can prove a folder is what was written. Every writer
goes through `write_manifest`: one schema, and a model card (`README.md`) beside it for the
folders a user loads.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

from skillgraft import __version__
from skillgraft.checkpoint.card import CARD, Card, render_card
from skillgraft.checkpoint.folder import WEIGHT_SUFFIXES, sha256_file
from skillgraft.checkpoint.publish import published_name
from skillgraft.errors import UserError

MANIFEST = "skillgraft.json"
LOADABLE = ("model", "vector", "adapter")  # kinds that get a model card


def input_record(role: str, checkpoint) -> dict:
    """What identifies one input checkpoint: where it was, which config it had, which Hub commit."""
    return {"role": role, "path": str(Path(checkpoint.path).resolve()), **checkpoint.resolved.record(),
            "config_sha256": checkpoint.config_sha256, "model_type": checkpoint.model_type,
            "format": checkpoint.format}


def file_record(role: str, path: str | Path | None) -> dict | None:
    """What identifies an input file (training data, a GGUF) or a model folder given by path."""
    if path is None:
        return None
    path = Path(path)
    record: dict = {"role": role, "path": str(path.resolve()) if path.exists() else str(path)}
    if path.is_file():
        record["sha256"] = sha256_file(path)
    elif (path / "config.json").is_file():
        record["config_sha256"] = sha256_file(path / "config.json")
    return record


def write_manifest(folder: Path, *, kind: str, inputs: list[dict], options: dict,
                   file_sha256: dict[str, str] | None = None, extra: dict | None = None,
                   card: Card | None = None, unverified: tuple[str, ...] = ()) -> dict:
    """Write the model card (for model/vector/adapter folders), hash every file not already
    hashed, then write skillgraft.json into `folder`.

    A subfolder with its own skillgraft.json is a `part` (verified by its own manifest, not
    hashed again); `unverified` names subfolders of working state left out on purpose (a
    training run's Trainer checkpoints)."""
    folder = Path(folder)
    command = ["skillgraft", *sys.argv[1:]] if Path(sys.argv[0]).name.startswith("skillgraft") else None
    inputs = [entry for entry in inputs if entry is not None]
    if kind in LOADABLE:
        card = card or Card(title=published_name(folder))
        text = render_card(card, kind=kind, inputs=inputs, options=options, skipped=(extra or {}).get("skipped"),
                           command=command, version=__version__)
        (folder / CARD).write_text(text, encoding="utf-8")
    hashes = dict(file_sha256 or {})
    nested = sorted(p.parent.relative_to(folder).as_posix() for p in folder.glob(f"*/**/{MANIFEST}"))
    parts = [part for part in nested if not any(part.startswith(f"{other}/") for other in nested)]
    skipped = tuple(f"{prefix.rstrip('/')}/" for prefix in (*parts, *unverified))
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and relative != MANIFEST and relative not in hashes and not relative.startswith(skipped):
            hashes[relative] = sha256_file(path)
    manifest = {
        "kind": kind,
        "tool": "skillgraft",
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "inputs": inputs,
        "options": options,
        **(extra or {}),
        **({"parts": parts} if parts else {}),
        **({"unverified": list(unverified)} if unverified else {}),
        "files": {name: hashes[name] for name in sorted(hashes)},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n")
    return manifest


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{folder} has no {MANIFEST}; it was not written by skillgraft")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path}: not a skillgraft manifest (a JSON object)")
    return manifest


def verify(folder: str | Path) -> dict:
    """Recompute every file's sha256 against the manifest, and its parts' against theirs;
    weight files it does not list fail too (a shard slipped in beside the recorded ones would
    be loaded as if it belonged)."""
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
    parts = [str(part) for part in manifest.get("parts", [])]
    covered = tuple(f"{prefix.rstrip('/')}/" for prefix in (*parts, *manifest.get("unverified", [])))
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    unlisted = sorted(name for name in present - set(files) - {MANIFEST} if not name.startswith(covered))
    stray_weights = [name for name in unlisted if name.endswith(WEIGHT_SUFFIXES)]
    count = len(files)
    for part in parts:
        if not (folder / part).resolve().is_relative_to(folder.resolve()):
            raise UserError(f"{folder / MANIFEST}: part {part!r} escapes the folder")
        if not (folder / part / MANIFEST).is_file():
            missing.append(f"{part}/{MANIFEST}")
            continue
        inner = verify(folder / part)
        count += inner["files"]
        mismatched += [f"{part}/{n}" for n in inner["mismatched"]]
        missing += [f"{part}/{n}" for n in inner["missing"]]
        stray_weights += [f"{part}/{n}" for n in inner["unlisted_weights"]]
        unlisted += [f"{part}/{n}" for n in inner["unlisted"]]
    return {"path": str(folder), "kind": manifest.get("kind"), "files": count,
            "ok": not mismatched and not missing and not stray_weights, "mismatched": mismatched,
            "missing": missing, "unlisted": unlisted, "unlisted_weights": stray_weights}
