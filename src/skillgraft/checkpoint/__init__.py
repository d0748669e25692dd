"""Hugging Face checkpoint folders: explicit tensor reads, streaming shard writes, manifests,
model cards, atomic publication, and where a named model lives (folder, Hub id, `lab:NAME`).

Imports only torch, safetensors-format parsing and the standard library (huggingface_hub
and PyYAML lazily, when a Hub id or a model card needs them), so the graft path starts
fast and works without transformers installed.
"""

from skillgraft.checkpoint.card import Card
from skillgraft.checkpoint.folder import Checkpoint, contained_path, is_weight_file, sha256_file
from skillgraft.checkpoint.manifest import MANIFEST, file_record, input_record, read_manifest, verify, write_manifest
from skillgraft.checkpoint.publish import AtomicFolder, atomic_file, check_output, write_file_atomic
from skillgraft.checkpoint.writer import DEFAULT_SHARD_SIZE, PlannedTensor, ShardedWriter, parse_size

__all__ = [
    "AtomicFolder", "Card", "Checkpoint", "DEFAULT_SHARD_SIZE", "MANIFEST", "PlannedTensor", "ShardedWriter",
    "atomic_file", "check_output", "contained_path", "file_record", "input_record", "is_weight_file", "parse_size",
    "read_manifest", "sha256_file", "verify", "write_file_atomic", "write_manifest",
]
