"""A Hugging Face Hub cache laid out exactly as `huggingface_hub` lays it out, built from a
local folder, so tests resolve `org/name[@revision]` ids with no network:

    HUB/models--org--name/blobs/<sha256>            the files' contents
    HUB/models--org--name/snapshots/<commit>/FILE   symlinks to ../../blobs/<sha256>
    HUB/models--org--name/refs/<revision>           the commit hash
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def add_to_cache(hub: Path, repo_id: str, folder: Path, revision: str = "main", commit: str | None = None) -> str:
    """Put `folder`'s files into the cache as `repo_id` at `revision`; returns the commit hash."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    commit = commit or hashlib.sha1(f"{repo_id}:{revision}:{folder}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file():
            continue
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / path.name
        if not link.exists():
            os.symlink(os.path.relpath(blob, snapshot), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return commit
