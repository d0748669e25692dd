"""A trial's folder, `DIR/trials/NNNN/`: where it is, its result and manifest, and its model
output, which is deleted when the trial falls off the front (the recipe stays, so the
output can be rebuilt with one command)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from skillgraft.checkpoint.manifest import write_manifest
from skillgraft.checkpoint.publish import write_file_atomic


def trial_dir(out: Path, number: int) -> Path:
    return Path(out) / "trials" / f"{number:04d}"


def rebuild_command(folder: Path) -> str:
    return f"skillgraft run {folder / 'recipe.yaml'}"


def finish(folder: Path, result: dict, *, keep_output: bool) -> None:
    if not keep_output:
        remove_output(folder)
    write_file_atomic(folder / "result.json", json.dumps(result, indent=2, default=str) + "\n")
    write_manifest(folder, kind="trial", inputs=[], options={"params": result["params"]},
                   extra={"state": result["state"]})


def remove_output(folder: Path) -> bool:
    """Delete a trial's model output (and partial outputs a killed run left); True if there was one.
    A rename first, so two workers tidying at once never both delete and rewrite."""
    output = folder / "output"
    for partial in folder.glob(".output.*"):
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
    if not output.exists():
        return False
    doomed = folder / f".output.deleting-{os.getpid()}"
    try:
        os.rename(output, doomed)
    except OSError:
        return False  # another worker got there first
    shutil.rmtree(doomed, ignore_errors=True)
    return True


def drop_output(folder: Path) -> None:
    """After the trial fell off the front: delete its output, keep its recipe, say so in its manifest."""
    if remove_output(folder):
        result = json.loads((folder / "result.json").read_text())
        result["output_deleted"] = "neither best nor on the Pareto front (rerun with --keep to keep outputs)"
        write_file_atomic(folder / "result.json", json.dumps(result, indent=2, default=str) + "\n")
        write_manifest(folder, kind="trial", inputs=[], options={"params": result["params"]},
                       extra={"state": result["state"], "deleted": ["output/"]})
