"""Task vectors: pure tensor arithmetic, selection rules and the streaming driver.

The graft path imports torch and the checkpoint layer only (no transformers). Names are
resolved lazily so the CLI (`skillgraft --help`) starts without importing torch.
"""

from __future__ import annotations

from skillgraft.lazy import lazy_exports

_EXPORTS = {
    "extract": "skillgraft.vectors.driver",
    "graft": "skillgraft.vectors.driver",
    "TensorFilter": "skillgraft.vectors.rules",
    "embedding_role": "skillgraft.vectors.rules",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports("skillgraft.vectors", _EXPORTS)
