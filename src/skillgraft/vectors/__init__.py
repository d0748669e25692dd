"""Task vectors: pure tensor arithmetic, selection rules and the streaming driver.

Imports only torch and the checkpoint layer (no transformers), so the graft path is lean.
"""

from skillgraft.vectors.driver import extract, graft
from skillgraft.vectors.rules import TensorFilter, embedding_role

__all__ = ["TensorFilter", "embedding_role", "extract", "graft"]
