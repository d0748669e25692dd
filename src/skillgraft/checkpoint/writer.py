"""Streaming safetensors shard writer.

Every output tensor's name, dtype and shape are known before any arithmetic runs (they come
from the input headers), so the shard layout and each shard's header are planned up front
and tensor bytes are appended as they are produced, in as many pieces as the producer likes:
nothing waits in memory for a shard, or even a whole tensor, to be ready. The sha256 of each
file is computed on the bytes as they are written, so the manifest costs no second read.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from skillgraft.checkpoint.safetensors_file import DTYPES
from skillgraft.errors import UserError

DEFAULT_SHARD_SIZE = 5 * 1000**3
_SIZE_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
               "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}


def parse_size(text: str | int) -> int:
    """'5GB', '500MB', '2GiB' or a byte count -> bytes (decimal units, as transformers uses)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else None
    if not match or unit not in _SIZE_UNITS or float(match.group(1)) <= 0:
        raise UserError(f"--shard-size {text!r} is not a size like 5GB, 500MB or 2GiB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    dtype: str  # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.ceil(math.prod(self.shape) * DTYPES[self.dtype][1])


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """A tensor's bytes in safetensors (little-endian, row-major) order without a copy."""
    tensor = tensor.detach().contiguous()
    if tensor.numel() == 0:
        return memoryview(b"")
    return memoryview(tensor.view(-1).view(torch.uint8).numpy())


class ShardedWriter:
    """Writes planned tensors, in plan order, into shards plus an index when sharded."""

    def __init__(self, folder: Path, plan: list[PlannedTensor], shard_size: int = DEFAULT_SHARD_SIZE,
                 metadata: dict[str, str] | None = None):
        self.folder = Path(folder)
        self.metadata = {"format": "pt", **(metadata or {})}
        self.shards = self._split(plan, shard_size)
        count = len(self.shards)
        self.file_names = (["model.safetensors"] if count == 1 else
                           [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)])
        self._order = [(shard_i, t) for shard_i, shard in enumerate(self.shards) for t in shard]
        self._next = 0
        self._tensor_written = 0  # bytes of the current tensor written so far
        self._handle = None
        self._hash = None
        self.sha256: dict[str, str] = {}
        self.bytes_written = 0

    @staticmethod
    def _split(plan: list[PlannedTensor], shard_size: int) -> list[list[PlannedTensor]]:
        shards: list[list[PlannedTensor]] = [[]]
        size = 0
        for tensor in plan:
            if shards[-1] and size + tensor.nbytes > shard_size:
                shards.append([])
                size = 0
            shards[-1].append(tensor)
            size += tensor.nbytes
        return shards

    def _header(self, shard: list[PlannedTensor]) -> bytes:
        header: dict[str, object] = {"__metadata__": self.metadata}
        offset = 0
        for tensor in shard:
            header[tensor.name] = {"dtype": tensor.dtype, "shape": list(tensor.shape),
                                   "data_offsets": [offset, offset + tensor.nbytes]}
            offset += tensor.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        return len(raw).to_bytes(8, "little") + raw

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        self._handle.write(data)
        self._hash.update(data)
        self.bytes_written += len(data)

    def write(self, name: str, data: torch.Tensor | bytes | bytearray) -> bool:
        """Append the next piece of the current planned tensor (a tensor of the planned dtype, or
        raw bytes); pieces follow each other in order. Returns True when the piece completes the
        tensor."""
        if self._next >= len(self._order):
            raise RuntimeError(f"tensor {name!r} was not planned")
        shard_i, planned = self._order[self._next]
        if planned.name != name:
            raise RuntimeError(f"expected tensor {planned.name!r} next, got {name!r}")
        payload = tensor_bytes(data) if isinstance(data, torch.Tensor) else memoryview(data)
        if self._tensor_written + payload.nbytes > planned.nbytes:
            raise RuntimeError(f"tensor {name!r}: {self._tensor_written + payload.nbytes} bytes, "
                               f"planned {planned.nbytes}")
        if self._handle is None:
            self._handle = open(self.folder / self.file_names[shard_i], "wb")
            self._hash = hashlib.sha256()
            self._emit(self._header(self.shards[shard_i]))
        self._emit(payload)
        self._tensor_written += payload.nbytes
        if self._tensor_written < planned.nbytes:
            return False
        self._next += 1
        self._tensor_written = 0
        last_of_shard = self._next == len(self._order) or self._order[self._next][0] != shard_i
        if last_of_shard:
            self._handle.close()
            self._handle = None
            self.sha256[self.file_names[shard_i]] = self._hash.hexdigest()
        return True

    def close(self) -> dict[str, str]:
        """Finish: check every planned tensor arrived, write the index; return file -> sha256."""
        if self._next != len(self._order):
            missing = self._order[self._next][1].name
            raise RuntimeError(f"writer closed before tensor {missing!r} was fully written")
        if not self._order:  # nothing selected: still a valid, empty checkpoint file
            self._handle = open(self.folder / self.file_names[0], "wb")
            self._hash = hashlib.sha256()
            self._emit(self._header([]))
            self._handle.close()
            self._handle = None
            self.sha256[self.file_names[0]] = self._hash.hexdigest()
        if len(self.shards) > 1:
            weight_map = {t.name: self.file_names[i] for i, shard in enumerate(self.shards) for t in shard}
            index = {"metadata": {"total_size": sum(t.nbytes for _, t in self._order)}, "weight_map": weight_map}
            index_name = "model.safetensors.index.json"
            raw = (json.dumps(index, indent=2) + "\n").encode()
            (self.folder / index_name).write_bytes(raw)
            self.sha256[index_name] = hashlib.sha256(raw).hexdigest()
        return dict(self.sha256)

    def abort(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
