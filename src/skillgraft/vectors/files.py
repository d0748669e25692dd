"""Non-weight files that travel with a vector or grafted model (config, tokenizer, templates)."""

from __future__ import annotations

import shutil
from pathlib import Path

from skillgraft.checkpoint import MANIFEST, is_weight_file


def copy_side_files(source: Path, dest: Path) -> list[str]:
    """Copy the top-level files of a checkpoint that are not weights or our manifest:
    config.json, generation_config.json, tokenizer files, chat templates, README."""
    copied = []
    for path in sorted(Path(source).iterdir()):
        if path.is_file() and not is_weight_file(path.name) and path.name != MANIFEST:
            shutil.copy2(path, dest / path.name)
            copied.append(path.name)
    return copied
