"""`skillgraft.json` beside every training output: what was made, from what, with which options.

A folder alone does not say which data, which base weights and which settings produced it;
this file does (config hash, per-file sha256 of inputs and outputs), so a result can be
traced and a resume can check it continues the same run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import skillgraft


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(folder: str | Path) -> dict[str, str]:
    """sha256 of every file in `folder` (relative names), skillgraft.json itself excluded."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "skillgraft.json"}


def input_entry(path: str | None) -> dict | None:
    """Path plus sha256: of the file, or of config.json for a model folder."""
    if path is None:
        return None
    p = Path(path)
    entry: dict = {"path": str(path)}
    if p.is_file():
        entry["sha256"] = sha256_file(p)
    elif (p / "config.json").is_file():
        entry["config_sha256"] = sha256_file(p / "config.json")
    return entry


def write_provenance(folder: str | Path, kind: str, inputs: dict, options: dict, extra: dict | None = None,
                     files: dict | None = None) -> Path:
    """Write `folder/skillgraft.json`; `files` defaults to the sha256 of every file in the folder."""
    record = {
        "kind": kind,
        "tool": "skillgraft",
        "version": skillgraft.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": inputs,
        "options": options,
        "files": file_hashes(folder) if files is None else files,
        **(extra or {}),
    }
    path = Path(folder) / "skillgraft.json"
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def staging_dir(final: Path, create: bool = True) -> Path:
    """The temp folder next to `final` (`.NAME.tmp`), to be published with `publish`.

    The name is fixed so that every process of a distributed run (DeepSpeed ZeRO-3 gathers
    weights collectively) writes into the same place; a leftover one is cleared first.
    """
    staged = final.with_name(f".{final.name}.tmp")
    if create:
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
    return staged


def publish(staged: Path, final: Path) -> Path:
    """Replace `final` with `staged` by rename (the old folder is removed first)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)
    return final
