"""Non-weight files that travel with a vector or grafted model (config, tokenizer, templates)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from skillgraft.checkpoint import MANIFEST, is_weight_file
from skillgraft.errors import UserError


def copy_side_files(source: Path, dest: Path) -> list[str]:
    """Copy the top-level files of a checkpoint that are not weights or our manifest:
    config.json, generation_config.json, tokenizer files, chat templates, README."""
    copied = []
    for path in sorted(Path(source).iterdir()):
        if path.is_file() and not is_weight_file(path.name) and path.name != MANIFEST:
            shutil.copy2(path, dest / path.name)
            copied.append(path.name)
    return copied


def read_vector_manifest(folder: Path) -> dict | None:
    """The vector's manifest, if it has one; refuse a folder skillgraft wrote as a model,
    since adding a whole model's weights as a "vector" doubles the target."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: not valid JSON") from None
    kind = manifest.get("kind") if isinstance(manifest, dict) else None
    if kind not in (None, "vector"):
        raise UserError(f"{folder} is a {kind} folder, not a vector; extract one first or use --delta BASE SKILLED")
    return manifest
