"""GGUF file → checkpoint folder, through transformers' own GGUF loader.

Why transformers and not our own reader: its loader already knows how each architecture's
tensors are named, permuted (llama's q/k) and dequantised, and how the tokenizer and chat
template are rebuilt from the metadata; a second implementation would only drift from it.
What this module adds is what a GGUF load does not give: refusal of bad files before any
work (one `error:` line), a plain folder without the `quantization_config` (so
`from_pretrained(DIR)` loads it with nothing else), atomic publication, and provenance
(the GGUF's sha256 and quantisation type in `skillgraft.json`).
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from skillgraft.checkpoint import AtomicFolder, check_output, sha256_file, write_manifest
from skillgraft.errors import UserError

DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF header says about the model inside (read without loading any tensor)."""

    architecture: str
    name: str | None
    file_type: str | None          # llama.cpp's overall quantisation label, e.g. MOSTLY_Q4_1
    tensor_types: dict[str, int]   # tensors per storage type, e.g. {"Q4_1": 210, "F32": 61}


def _field(reader, key: str):
    from gguf import GGUFValueType

    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    value = field.parts[field.data[0]]
    if field.types and field.types[0] == GGUFValueType.STRING:
        return bytes(value).decode("utf-8", errors="replace")
    return value.tolist()[0]


def read_info(path: Path) -> GGUFInfo:
    """Parse the header and tensor table; a missing, foreign or truncated file is a UserError."""
    try:
        from gguf import GGUFReader, LlamaFileType
    except ImportError:
        raise UserError("convert gguf needs the `gguf` package: pip install 'skillgraft[convert]'") from None
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # noqa: BLE001
        # gguf raises ValueError for a bad magic, IndexError/ValueError when the tensor data
        # the header announces runs past the end of the file, others for a damaged table
        raise UserError(f"{path}: not a readable GGUF file (truncated or not GGUF: {exc})") from None
    architecture = _field(reader, "general.architecture")
    if not architecture:
        raise UserError(f"{path}: the GGUF header has no general.architecture")
    file_type = _field(reader, "general.file_type")
    try:
        file_label = LlamaFileType(file_type).name if file_type is not None else None
    except ValueError:
        file_label = f"unknown ({file_type})"
    counts = Counter(t.tensor_type.name for t in reader.tensors)
    return GGUFInfo(architecture, _field(reader, "general.name"), file_label, dict(sorted(counts.items())))


def check_supported(info: GGUFInfo, path: Path) -> None:
    """Refuse an architecture transformers cannot build from GGUF, naming those it can."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if info.architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise UserError(f"{path}: architecture {info.architecture!r} cannot be loaded from GGUF by transformers "
                        f"(it can: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})")


@contextlib.contextmanager
def _dequantise_bar(quiet: bool):
    """transformers' GGUF loader draws its own tqdm bar whatever its progress-bar switch says;
    make it one that clears itself when done (or failed), only on a terminal, never with --quiet,
    so a failure leaves one `error:` line."""
    import transformers.modeling_gguf_pytorch_utils as loader
    from tqdm.auto import tqdm

    original = getattr(loader, "tqdm", None)
    if original is not None:
        loader.tqdm = functools.partial(tqdm, leave=False, disable=True if quiet else None)
    try:
        yield
    finally:
        if original is not None:
            loader.tqdm = original


def _load(path: Path, dtype: str, quiet: bool):
    """Model and tokenizer as transformers builds them from the GGUF (dequantised)."""
    import torch

    from skillgraft import cpu

    cpu.ensure_threads()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        with _dequantise_bar(quiet):
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                         dtype=getattr(torch, dtype))
    except MemoryError:
        raise UserError(f"{path}: not enough memory to convert it: the whole model is dequantised in memory "
                        f"(about {_needed_gb(path, dtype):.1f} GB at {dtype}); free memory or use --dtype bfloat16"
                        ) from None
    except Exception as exc:  # noqa: BLE001 - a user's file inside a third-party loader: any failure is the file's
        raise UserError(f"{path}: transformers cannot load this GGUF ({_first_line(exc)})") from None
    return model, tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def _needed_gb(path: Path, dtype: str) -> float:
    """The converted weights' size: every parameter at `dtype` (the header's tensor shapes)."""
    import numpy as np

    try:
        from gguf import GGUFReader

        params = sum(int(np.prod(t.shape)) for t in GGUFReader(path).tensors)
    except Exception:  # noqa: BLE001 - only an estimate for a message
        return float("nan")
    return params * (4 if dtype == "float32" else 2) / 1e9


def _drop_quantization(model) -> None:
    """The weights are dequantised; a left-over `quantization_config` would make
    `from_pretrained(DIR)` look for the GGUF file again."""
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.config.use_cache = True


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, *, dtype: str = "float32", force: bool = False,
                 quiet: bool = False) -> dict:
    """Write the GGUF model as a checkpoint folder (safetensors, config, tokenizer, chat
    template, `skillgraft.json`); returns the manifest plus `output`.

    `float32` (default) keeps the dequantised values exactly; `bfloat16` halves the folder
    and rounds them once more.
    """
    path, out = Path(gguf_path), Path(out_dir)
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    info = read_info(path)
    check_supported(info, path)
    check_output(out, [path], force=force)
    digest = sha256_file(path)
    model, tokenizer = _load(path, dtype, quiet)
    _drop_quantization(model)
    with AtomicFolder(out, force=force) as temp:
        model.save_pretrained(temp)
        tokenizer.save_pretrained(temp)
        manifest = write_manifest(
            temp, kind="model",
            inputs=[{"role": "gguf", "path": str(path.resolve()), "sha256": digest, "architecture": info.architecture,
                     "name": info.name, "quantization": info.file_type, "tensor_types": info.tensor_types}],
            options={"dtype": dtype, "force": force}, file_sha256={},
            extra={"converted_by": "transformers GGUF loader (dequantised)"})
    return {"output": str(out), **manifest}
