"""What kind of folder an input is (model, vector or adapter), so the wrong kind is refused.

The likeliest slip when translating a notebook is `graft TARGET INSTRUCT_MODEL` instead of
`graft TARGET --delta BASE INSTRUCT_MODEL`: it adds a whole model's weights to the target and,
unchecked, publishes gibberish. The kind is read from, in order:

1. `skillgraft.json` (`kind`), which every folder skillgraft writes carries;
2. the safetensors header metadata `skillgraft_kind` (survives a copy without the manifest);
3. peft's `adapter_config.json` (a LoRA adapter);
4. the weights themselves: the layer-norm scales of a model sit around 1, those of a delta
   around 0 (a fine-tune barely moves them). Only a clear reading counts; a folder with no
   norm tensors (say, a vector extracted with `--exclude norm`) stays "unknown" and is taken
   as the role asks. Vectors written by other tools that read as models can be forced with
   `--assume-vector`.

The norm reading is only a guess: some families store norm scales as offsets from 1 (Gemma,
known by name; others are not), and a synthetic checkpoint may have any scales. So where a
model is expected, a folder whose norms read as a delta's is still taken as a model when it
looks like one to transformers (a `config.json` naming an architecture, and a tokenizer),
with a note; `--assume-model` takes it without the note. Only a declared kind (manifest or
safetensors metadata) is never overridden.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from skillgraft.errors import UserError

MANIFEST = "skillgraft.json"
_NORM = re.compile(r"(norm|(^|\.)ln_?\w*)\.weight$", re.IGNORECASE)
MODEL_NORM = 0.5    # mean |norm scale| above this: a model's norm weights (initialised at 1)
VECTOR_NORM = 0.05  # below this: a delta's (the norm scales of a fine-tune barely move)
NORM_SAMPLE = 8     # norm tensors read (they are tiny)


@dataclass(frozen=True)
class FolderKind:
    kind: str      # model, vector, adapter or unknown
    evidence: str  # how it was decided, for messages


def classify(folder: Path, checkpoint=None) -> FolderKind:
    """The kind of `folder` (see the module doc); `checkpoint` is its opened `Checkpoint`, if any."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            kind = json.loads(manifest.read_text()).get("kind")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            kind = None
        if kind in ("model", "vector", "adapter"):
            return FolderKind(kind, f"its {MANIFEST}")
    if (folder / "adapter_config.json").is_file():
        return FolderKind("adapter", "adapter_config.json")
    if checkpoint is None:
        return FolderKind("unknown", "no weights read")
    for info in checkpoint.tensors.values():
        kind = checkpoint.metadata_of(info.path).get("skillgraft_kind")
        if kind in ("model", "vector"):
            return FolderKind(kind, "its safetensors metadata")
        break
    return _from_norms(checkpoint)


def _from_norms(checkpoint) -> FolderKind:
    names = [n for n in checkpoint.names if _NORM.search(n) and len(checkpoint.tensors[n].shape) == 1
             and checkpoint.tensors[n].is_float][:NORM_SAMPLE]
    if not names:
        return FolderKind("unknown", "no norm weights to judge by")
    if str(checkpoint.model_type or "").startswith("gemma"):
        return FolderKind("unknown", "its norm weights are offsets from 1 (gemma), which cannot tell")
    scale = sum(float(checkpoint.read(n).float().abs().mean()) for n in names) / len(names)
    if scale >= MODEL_NORM:
        return FolderKind("model", f"its norm weights average |w| = {scale:.2f}, as a model's do")
    if scale <= VECTOR_NORM:
        return FolderKind("vector", f"its norm weights average |w| = {scale:.2g}, as a delta's do")
    return FolderKind("unknown", f"its norm weights average |w| = {scale:.2g}")


def declared(found: FolderKind) -> bool:
    """The kind was written down (manifest or safetensors metadata), not guessed from weights."""
    return found.evidence.startswith((f"its {MANIFEST}", "its safetensors metadata"))


def model_config(folder: Path) -> str | None:
    """The architecture a folder's config.json names when it also has a tokenizer (what
    transformers needs to load it as a model), else None."""
    from skillgraft.checkpoint.resolve import TOKENIZER_FILES

    try:
        architectures = json.loads((Path(folder) / "config.json").read_text()).get("architectures")
    except (OSError, ValueError, AttributeError):
        return None
    if not architectures or not any((Path(folder) / name).is_file() for name in TOKENIZER_FILES):
        return None
    return str(architectures[0])


def require_model(checkpoint, role: str, assume_model: bool = False) -> None:
    """Refuse a vector or adapter where a model belongs (graft target, extract inputs, --delta).

    A kind guessed from the norm weights alone never refuses a folder that `assume_model` or
    its config and tokenizer say is a model (see the module doc)."""
    found = classify(checkpoint.path, checkpoint)
    if found.kind == "vector" and not declared(found):
        if assume_model:
            return
        architecture = model_config(checkpoint.path)
        if architecture is not None:
            print(f"note: {role} {checkpoint.source}: {found.evidence}, but its config.json names {architecture} "
                  f"and it has a tokenizer: taken as a model (--assume-model says so without this note)",
                  file=sys.stderr)
            return
        raise UserError(f"{role} {checkpoint.source} reads as a vector ({found.evidence}) and has no config.json "
                        f"architecture with a tokenizer: if it is a model whose norm scales are stored as offsets, "
                        f"pass --assume-model; if it is a vector, graft it onto a model with "
                        f"`skillgraft graft MODEL {checkpoint.source} -o OUT`")
    if found.kind == "vector":
        raise UserError(f"{role} {checkpoint.source} is a vector (weight differences, by {found.evidence}), not a "
                        f"model: graft it onto a model with `skillgraft graft MODEL {checkpoint.source} -o OUT`")
    _note_unclear(found, role, checkpoint.source, "a model")
    if found.kind == "adapter":
        raise UserError(f"{role} {checkpoint.source} is a LoRA adapter, not a model: merge it into its base first "
                        "(a training config with `merge: true` writes the merged model)")


def require_vector(checkpoint, role: str = "vector", assume_vector: bool = False) -> None:
    """Refuse a model or adapter where a vector belongs, unless `assume_vector`."""
    found = classify(checkpoint.path, checkpoint)
    if found.kind == "adapter":
        raise UserError(f"{role} {checkpoint.source} is a LoRA adapter, not a vector (weight differences)")
    written = declared(found)
    if found.kind == "model" and (written or not assume_vector):
        hint = "" if written else " (--assume-vector takes it as a vector anyway)"
        raise UserError(f"{role} {checkpoint.source} is a full model (by {found.evidence}), not a vector: did you "
                        f"mean --delta BASE SKILLED, or `skillgraft extract BASE SKILLED -o VECTOR` first?{hint}")
    _note_unclear(found, role, checkpoint.source, "a vector")


def _note_unclear(found: FolderKind, role: str, source: str, taken_as: str) -> None:
    """A norm reading between a model's and a delta's: say what was seen and what was assumed."""
    if found.kind == "unknown" and found.evidence.startswith("its norm weights average"):
        print(f"note: {role} {source}: {found.evidence}, between a model's (~1) and a delta's (~0); taken as "
              f"{taken_as}, as its place on the command line says", file=sys.stderr)


def refuse_vector_folder(folder: Path, role: str = "model") -> None:
    """For loaders that hand a folder to transformers (eval, train): a vector folder is no model."""
    from skillgraft.checkpoint.folder import Checkpoint

    try:
        checkpoint = Checkpoint(folder, role=role) if (Path(folder) / "config.json").is_file() else None
    except UserError:  # pickle-only or unusual layouts: transformers will say what it thinks
        checkpoint = None
    found = classify(folder, checkpoint)
    if found.kind == "vector":
        raise UserError(f"{role} {folder} is a vector (weight differences), not a model: it loads as random-looking "
                        "weights; graft it onto a model first (`skillgraft graft MODEL VECTOR -o OUT`)")


def local_model(spec: str, role: str = "model"):
    """A model to hand to transformers (`from_pretrained`): its local folder (a Hub id or
    `lab:NAME` resolved), refused when it is a vector."""
    from skillgraft.checkpoint.resolve import resolve_model

    resolved = resolve_model(spec, role)
    refuse_vector_folder(resolved.path, role)
    return resolved
