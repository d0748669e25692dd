"""Task vectors: pure tensor arithmetic, selection rules and the streaming driver.

The graft path imports torch and the checkpoint layer only (no transformers). Names are
resolved lazily so the CLI (`skillgraft --help`) starts without importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "extract": "skillgraft.vectors.driver",
    "graft": "skillgraft.vectors.driver",
    "TensorFilter": "skillgraft.vectors.rules",
    "embedding_role": "skillgraft.vectors.rules",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'skillgraft.vectors' has no attribute {name!r}")
