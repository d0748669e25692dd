"""Hugging Face checkpoint folders: explicit tensor reads, streaming shard writes, manifests,
model cards, atomic publication, and where a named model lives (folder, Hub id, `lab:NAME`).

Imports torch, safetensors-format parsing and the standard library (huggingface_hub and
PyYAML lazily, when a Hub id or a model card needs them), so the graft path starts fast and
works without transformers installed. Names are resolved lazily: resolving a model name
(`checkpoint.resolve`) does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Card": "card", "Checkpoint": "folder", "contained_path": "folder", "is_weight_file": "folder",
    "sha256_file": "folder", "MANIFEST": "manifest", "file_record": "manifest", "input_record": "manifest",
    "read_manifest": "manifest", "verify": "manifest", "write_manifest": "manifest", "AtomicFolder": "publish",
    "atomic_file": "publish", "check_output": "publish", "write_file_atomic": "publish",
    "DEFAULT_SHARD_SIZE": "writer", "PlannedTensor": "writer", "ShardedWriter": "writer", "parse_size": "writer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"skillgraft.checkpoint.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'skillgraft.checkpoint' has no attribute {name!r}")
