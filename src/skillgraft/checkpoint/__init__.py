"""Hugging Face checkpoint folders: explicit tensor reads, streaming shard writes, manifests.

Imports only torch, safetensors-format parsing and the standard library, so the graft path
starts fast and works without transformers installed.
"""

from skillgraft.checkpoint.folder import Checkpoint, contained_path, is_weight_file, sha256_file
from skillgraft.checkpoint.manifest import MANIFEST, read_manifest, verify, write_manifest
from skillgraft.checkpoint.publish import AtomicFolder, check_output
from skillgraft.checkpoint.writer import DEFAULT_SHARD_SIZE, PlannedTensor, ShardedWriter, parse_size

__all__ = [
    "AtomicFolder", "Checkpoint", "DEFAULT_SHARD_SIZE", "MANIFEST", "PlannedTensor", "ShardedWriter",
    "check_output", "contained_path", "is_weight_file", "parse_size", "read_manifest", "sha256_file",
    "verify", "write_manifest",
]
