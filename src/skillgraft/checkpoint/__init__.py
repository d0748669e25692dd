"""Hugging Face checkpoint folders: explicit tensor reads, streaming shard writes, manifests,
model cards, atomic publication, and where a named model lives (folder, Hub id, `lab:NAME`).

Imports torch, safetensors-format parsing and the standard library (huggingface_hub and
PyYAML lazily, when a Hub id or a model card needs them), so the graft path starts fast and
works without transformers installed. Names are resolved lazily: resolving a model name
(`checkpoint.resolve`) does not import torch.
"""

from __future__ import annotations

from skillgraft.lazy import lazy_exports

_EXPORTS = {name: f"skillgraft.checkpoint.{module}" for name, module in {
    "Card": "card", "Checkpoint": "folder", "contained_path": "folder", "is_weight_file": "folder",
    "sha256_file": "folder", "MANIFEST": "manifest", "file_record": "manifest", "input_record": "manifest",
    "read_manifest": "manifest", "verify": "manifest", "write_manifest": "manifest", "AtomicFolder": "publish",
    "atomic_file": "publish", "check_output": "publish", "write_file_atomic": "publish",
    "DEFAULT_SHARD_SIZE": "writer", "PlannedTensor": "writer", "ShardedWriter": "writer", "parse_size": "writer",
}.items()}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports("skillgraft.checkpoint", _EXPORTS)
