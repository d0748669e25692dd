"""One safetensors file: a validated header and explicit reads of single tensors.

Why not `safetensors.safe_open`: it maps the file, and the pages it touches count in the
process's resident memory, so streaming over a 15 GB checkpoint shows 15 GB of RSS. Here
a tensor, or any byte range of it (a range of rows, for streaming in blocks), is read with
positioned reads into a fresh buffer that is freed when the caller drops it, so memory is
bounded by what the caller holds, not by the file. The header is checked
strictly up front (length, offsets inside the data, no overlaps, sizes that match shapes,
known dtypes) so a corrupt or truncated shard is a clear error, not garbage weights.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from skillgraft.errors import UserError

# safetensors dtype code -> (torch dtype or None when torch has no match, bytes per element)
DTYPES: dict[str, tuple[torch.dtype | None, float]] = {
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
    "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
    "U16": (getattr(torch, "uint16", None), 2), "U32": (getattr(torch, "uint32", None), 4),
    "U64": (getattr(torch, "uint64", None), 8),
    "F8_E4M3": (getattr(torch, "float8_e4m3fn", None), 1), "F8_E5M2": (getattr(torch, "float8_e5m2", None), 1),
    "F8_E8M0": (getattr(torch, "float8_e8m0fnu", None), 1), "F4": (None, 0.5), "F6_E2M3": (None, 0.75),
    "F6_E3M2": (None, 0.75), "C64": (getattr(torch, "complex64", None), 8),
}
FLOAT_CODES = {"F64", "F32", "F16", "BF16"}
CODE_OF_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}
TORCH_OF_CODE = {code: entry[0] for code, entry in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, dtype code, shape and absolute byte range."""

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute offset in the file
    nbytes: int

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_CODES


class SafetensorsFile:
    """A parsed, validated safetensors header plus positioned reads of its tensors."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tensors: dict[str, TensorInfo] = {}
        self.metadata: dict[str, str] = {}
        self._parse()

    def _parse(self) -> None:
        where = str(self.path)
        try:
            file_size = self.path.stat().st_size
            with open(self.path, "rb") as handle:
                prefix = handle.read(8)
                if len(prefix) < 8:
                    raise UserError(f"{where}: truncated safetensors file ({file_size} bytes, no header)")
                (header_len,) = struct.unpack("<Q", prefix)
                if header_len > file_size - 8 or header_len > MAX_HEADER:
                    raise UserError(f"{where}: header length {header_len} is larger than the file ({file_size} bytes)")
                raw = handle.read(header_len)
        except OSError as exc:
            raise UserError(f"{where}: cannot read ({exc.strerror or exc})") from None
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{where}: header is not valid JSON ({exc})") from None
        if not isinstance(header, dict):
            raise UserError(f"{where}: header is not a JSON object")
        data_start = 8 + header_len
        data_size = file_size - data_start
        self.metadata = header.pop("__metadata__", None) or {}
        spans = []
        for name, entry in header.items():
            info = self._tensor_info(name, entry, data_start, data_size)
            self.tensors[name] = info
            spans.append((info.start, info.start + info.nbytes, name))
        spans.sort()
        for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
            if start < end:
                raise UserError(f"{where}: tensors {first!r} and {second!r} overlap in the data section")

    def _tensor_info(self, name: str, entry: object, data_start: int, data_size: int) -> TensorInfo:
        where = f"{self.path}: tensor {name!r}"
        if not isinstance(entry, dict):
            raise UserError(f"{where}: malformed header entry")
        dtype = entry.get("dtype")
        if dtype not in DTYPES:
            raise UserError(f"{where}: unknown dtype {dtype!r}")
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise UserError(f"{where}: malformed shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise UserError(f"{where}: malformed data_offsets {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end:
            raise UserError(f"{where}: data_offsets {offsets} are not an ordered range")
        if end > data_size:
            raise UserError(f"{where}: data_offsets {offsets} lie outside the data section "
                            f"({data_size} bytes; file truncated?)")
        expected = math.ceil(math.prod(shape) * DTYPES[dtype][1])
        if end - begin != expected:
            raise UserError(f"{where}: holds {end - begin} bytes but {dtype}{shape} needs {expected}")
        return TensorInfo(name, self.path, dtype, tuple(shape), data_start + begin, end - begin)


def read_bytes(info: TensorInfo, start: int = 0, stop: int | None = None) -> bytearray:
    """Read bytes [start, stop) of a tensor's data (all of it by default) with positioned
    reads into a fresh buffer."""
    stop = info.nbytes if stop is None else stop
    if not 0 <= start <= stop <= info.nbytes:
        raise ValueError(f"byte range [{start}, {stop}) is outside tensor {info.name!r} ({info.nbytes} bytes)")
    buffer = bytearray(stop - start)
    view = memoryview(buffer)
    fd = os.open(info.path, os.O_RDONLY)
    try:
        done = 0
        while done < len(buffer):
            count = os.preadv(fd, [view[done:]], info.start + start + done)
            if count == 0:
                raise UserError(f"{info.path}: tensor {info.name!r} is truncated")
            done += count
    finally:
        os.close(fd)
    return buffer


def read_entries(info: TensorInfo, start: int, stop: int) -> torch.Tensor:
    """Entries [start, stop) of the flattened tensor, as a 1-D tensor that owns its memory."""
    torch_dtype = TORCH_OF_CODE[info.dtype]
    if torch_dtype is None:
        raise UserError(f"{info.path}: tensor {info.name!r} has dtype {info.dtype}, which torch cannot hold")
    width = int(DTYPES[info.dtype][1])
    buffer = read_bytes(info, start * width, stop * width)
    if not buffer:
        return torch.empty(0, dtype=torch_dtype)
    return torch.frombuffer(buffer, dtype=torch_dtype)


def read_tensor(info: TensorInfo) -> torch.Tensor:
    """Read one tensor as a torch tensor that owns its memory (no file mapping)."""
    return read_entries(info, 0, math.prod(info.shape)).reshape(info.shape)
