"""A Hugging Face checkpoint folder: config, weight files and the map from tensor to file.

Accepts `model.safetensors`, `model.safetensors.index.json` + shards, and (only with
`allow_pickle`) the old `pytorch_model.bin` layouts, which are then read with
`torch.load(weights_only=True)`, a shard at a time. Nothing here loads a whole model. The
folder may be named by a Hugging Face id or `lab:NAME` (see `checkpoint.resolve`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch

from skillgraft.checkpoint.safetensors_file import (
    TORCH_OF_CODE, SafetensorsFile, TensorInfo, read_bytes, read_entries, read_tensor,
)
from skillgraft.errors import UserError

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
CODE_OF_TORCH = {dtype: code for code, dtype in TORCH_OF_CODE.items() if dtype is not None}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, read in blocks (the one file hash of the project)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def is_weight_file(name: str) -> bool:
    """Weight files and their indexes: everything a graft rewrites instead of copying."""
    return name.endswith(WEIGHT_SUFFIXES) or name.endswith(".index.json")


def contained_path(folder: Path, relative: str, what: str) -> Path:
    """`relative` inside `folder`, refusing absolute paths and `..` escapes. The check is on the
    name, not the resolved file: the Hub cache's snapshot files are symlinks into its blobs."""
    candidate = Path(os.path.normpath(folder / relative))
    if Path(relative).is_absolute() or not candidate.is_relative_to(Path(os.path.normpath(folder))):
        raise UserError(f"{what} names {relative!r}, a path outside {folder}")
    return candidate


class Checkpoint:
    """Read-only view of one checkpoint folder, one tensor (or a piece of one) at a time."""

    def __init__(self, path: str | Path, *, allow_pickle: bool = False, role: str = "checkpoint"):
        from skillgraft.checkpoint.resolve import resolve_model

        self.resolved = resolve_model(path, role)
        self.source = self.resolved.spec  # as the user named it
        self.path = self.resolved.path
        self.role = role
        if not self.path.is_dir():
            raise UserError(f"{role} {self.source} is not a folder")
        config_path = self.path / "config.json"
        if not config_path.is_file() and (self.path / "adapter_config.json").is_file():
            raise UserError(f"{role} {self.source} is a LoRA adapter (adapter_config.json), not a model or a vector: "
                            "merge it into its base first (a training config with `merge: true` writes the merged "
                            "model)")
        if not config_path.is_file():
            raise UserError(f"{role} {self.source} has no config.json (not a Hugging Face checkpoint folder)")
        try:
            self.config: dict = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{config_path}: not valid JSON ({exc})") from None
        self.config_sha256 = sha256_file(config_path)
        self.tensors: dict[str, TensorInfo] = {}
        self._pickle_files: dict[str, Path] = {}  # tensor name -> .bin file
        self._pickle_cache: tuple[Path, dict] | None = None
        self._metadata: dict[Path, dict[str, str]] = {}
        self.format = self._discover(allow_pickle)

    # -- discovery ---------------------------------------------------------------------
    def _discover(self, allow_pickle: bool) -> str:
        if (self.path / SAFE_INDEX).is_file():
            for shard in self._index_shards(SAFE_INDEX):
                self._add_safetensors(shard)
            return "safetensors"
        if (self.path / SAFE_SINGLE).is_file():
            self._add_safetensors(self.path / SAFE_SINGLE)
            return "safetensors"
        loose = sorted(self.path.glob("*.safetensors"))
        if loose:
            for shard in loose:
                self._add_safetensors(shard)
            return "safetensors"
        pickles = (self.path / PICKLE_INDEX).is_file() or (self.path / PICKLE_SINGLE).is_file()
        if pickles and not allow_pickle:
            raise UserError(f"{self.role} {self.source} holds only pickle (.bin) weights, which can run "
                            "code when loaded; convert to safetensors or pass --allow-pickle "
                            "(then read with torch.load(weights_only=True))")
        if pickles:
            self._discover_pickle()
            return "pickle"
        raise UserError(f"{self.role} {self.source} has no model.safetensors or {SAFE_INDEX}")

    def _index_shards(self, index_name: str) -> list[Path]:
        index_path = self.path / index_name
        try:
            index = json.loads(index_path.read_text())
            weight_map = index["weight_map"]
            assert isinstance(weight_map, dict)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, AssertionError, TypeError):
            raise UserError(f"{index_path}: not a valid index (needs a 'weight_map' object)") from None
        shards: dict[str, Path] = {}
        for tensor, shard in weight_map.items():
            if shard not in shards:
                path = contained_path(self.path, str(shard), f"{index_path} (tensor {tensor!r})")
                if not path.is_file():
                    raise UserError(f"{index_path} names shard {shard!r} (tensor {tensor!r}), which is missing")
                shards[shard] = path
        return list(shards.values())

    def _add_safetensors(self, path: Path) -> None:
        parsed = SafetensorsFile(path)
        self._metadata[path] = parsed.metadata
        for name, info in parsed.tensors.items():
            if name in self.tensors:
                raise UserError(f"{self.path}: tensor {name!r} appears in both {self.tensors[name].path.name} "
                                f"and {path.name}")
            self.tensors[name] = info

    def _discover_pickle(self) -> None:
        if (self.path / PICKLE_INDEX).is_file():
            files = self._index_shards(PICKLE_INDEX)
        else:
            files = [self.path / PICKLE_SINGLE]
        for file in files:
            state = self._load_pickle(file)
            for name, tensor in state.items():
                code = CODE_OF_TORCH.get(tensor.dtype)
                if code is None:
                    raise UserError(f"{file}: tensor {name!r} has unsupported dtype {tensor.dtype}")
                self.tensors[name] = TensorInfo(name, file, code, tuple(tensor.shape), 0,
                                                tensor.numel() * tensor.element_size())
                self._pickle_files[name] = file
            self._pickle_cache = (file, state)

    def _load_pickle(self, file: Path) -> dict:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad pickle
            raise UserError(f"{file}: cannot load with weights_only=True ({str(exc).splitlines()[0]})") from None
        if not isinstance(state, dict):
            raise UserError(f"{file}: not a state dict")
        return state

    # -- queries -----------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Tensor names in file order (shard, then offset), the cheapest order to read."""
        return sorted(self.tensors, key=lambda n: (str(self.tensors[n].path), self.tensors[n].start, n))

    def _pickled(self, name: str) -> torch.Tensor:
        file = self._pickle_files[name]
        if self._pickle_cache is None or self._pickle_cache[0] != file:
            self._pickle_cache = (file, self._load_pickle(file))
        return self._pickle_cache[1][name]

    def read(self, name: str) -> torch.Tensor:
        """Read one tensor; the result owns its memory."""
        if name in self._pickle_files:
            return self._pickled(name).clone(memory_format=torch.contiguous_format)
        return read_tensor(self.tensors[name])

    def read_entries(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Entries [start, stop) of the flattened tensor, 1-D, in memory the caller owns."""
        if name in self._pickle_files:
            return self._pickled(name).reshape(-1)[start:stop].clone()
        return read_entries(self.tensors[name], start, stop)

    def read_rows(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` (any order, repeats allowed) of a tensor, one positioned read per run of
        consecutive ids: memory for those rows only."""
        shape = self.tensors[name].shape
        width = math.prod(shape[1:])
        unique, inverse = torch.unique(ids, sorted=True, return_inverse=True)
        if unique.numel() == 0:
            return torch.empty((0, *shape[1:]), dtype=TORCH_OF_CODE[self.tensors[name].dtype])
        breaks = ((unique[1:] - unique[:-1]) != 1).nonzero().flatten() + 1
        runs = [self.read_entries(name, int(run[0]) * width, (int(run[-1]) + 1) * width)
                for run in torch.tensor_split(unique, breaks)]
        rows = (runs[0] if len(runs) == 1 else torch.cat(runs)).view(unique.numel(), *shape[1:])
        return rows if torch.equal(unique, ids) else rows[inverse]  # ids already sorted, distinct: no gather

    def read_raw(self, name: str, start: int = 0, stop: int | None = None) -> bytes | bytearray:
        """Bytes [start, stop) of a tensor as stored (all of them by default), for pass-through
        of dtypes torch may not hold."""
        if name in self._pickle_files:
            tensor = self._pickled(name).contiguous()  # 0-dim tensors too: flatten before viewing as bytes
            return tensor.view(-1).view(torch.uint8).numpy()[start:stop].tobytes() if tensor.numel() else b""
        return read_bytes(self.tensors[name], start, stop)

    def metadata_of(self, file: Path) -> dict[str, str]:
        """The `__metadata__` of one safetensors file of this checkpoint (empty for pickles)."""
        return self._metadata.get(file, {})

    @property
    def tie_word_embeddings(self) -> bool | None:
        """The config's `tie_word_embeddings`, or None when it does not say (transformers then
        uses the architecture's default, so the tensors decide: see `vectors.rules.head_is_tied`)."""
        value = self.text_config().get("tie_word_embeddings", self.config.get("tie_word_embeddings"))
        return value if isinstance(value, bool) else None

    def text_config(self) -> dict:
        """The language-model part of the config (multimodal configs nest it)."""
        for key in ("text_config", "language_config", "llm_config"):
            if isinstance(self.config.get(key), dict):
                return self.config[key]
        return self.config

    @property
    def vocab_size(self) -> int | None:
        value = self.text_config().get("vocab_size", self.config.get("vocab_size"))
        return value if isinstance(value, int) else None

    @property
    def num_layers(self) -> int | None:
        cfg = self.text_config()
        for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
            if isinstance(cfg.get(key), int):
                return cfg[key]
        return None

    @property
    def model_type(self) -> str | None:
        return self.config.get("model_type")

    @property
    def total_bytes(self) -> int:
        return sum(info.nbytes for info in self.tensors.values())
