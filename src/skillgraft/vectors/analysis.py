"""`skillgraft inspect`: what a checkpoint or vector folder holds, and a vector's norms.

For a vector, the per-layer L2 norm of the deltas shows where a skill lives (and whether a
"vector" is really a whole model by mistake: norms as large as weights). Norms are read
tensor by tensor: memory for one tensor at a time, whatever the model size.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

from skillgraft.checkpoint import Checkpoint

_LAYER = re.compile(r"\.(\d+)\.")


def layer_of(name: str) -> str:
    """'model.layers.3.mlp.up_proj.weight' -> '3'; tensors outside blocks -> their own name."""
    match = _LAYER.search(name)
    return match.group(1) if match else name


def inspect_folder(path: str | Path, *, allow_pickle: bool = False, base=None, compare=None, top_k: int = 8,
                   svd_sample: int = 4, cp_threshold: float = 0.05) -> dict:
    """What the folder holds; for a vector (or a model with `base`), the diagnostics of
    `skillgraft.vectors.diagnostics`, against `compare` when given."""
    from skillgraft.checkpoint.kinds import classify

    checkpoint = Checkpoint(path, allow_pickle=allow_pickle, role="folder")
    found = classify(checkpoint.path, checkpoint)
    kind = found.kind if found.kind != "unknown" else "checkpoint"
    tensors = [{"name": n, "dtype": checkpoint.tensors[n].dtype, "shape": list(checkpoint.tensors[n].shape),
                "bytes": checkpoint.tensors[n].nbytes} for n in checkpoint.names]
    report = {
        "path": str(checkpoint.path), "kind": kind, "kind_evidence": found.evidence, "format": checkpoint.format,
        "model_type": checkpoint.model_type,
        "layers": checkpoint.num_layers, "vocab_size": checkpoint.vocab_size,
        "tensor_count": len(tensors), "parameters": sum(math.prod(t["shape"]) for t in tensors),
        "bytes": checkpoint.total_bytes, "dtypes": dict(Counter(t["dtype"] for t in tensors)),
        "files": sorted({checkpoint.tensors[n].path.name for n in checkpoint.names}),
        "tensors": tensors,
    }
    if kind == "vector" or base is not None or compare is not None:
        from skillgraft.vectors.diagnostics import diagnose, open_side

        base_checkpoint = Checkpoint(base, allow_pickle=allow_pickle, role="base") if base is not None else None
        side = open_side(checkpoint.path, base_checkpoint, str(path), allow_pickle)
        other = open_side(compare, base_checkpoint, str(compare), allow_pickle) if compare is not None else None
        report["diagnostics"] = diagnose(side, base=base_checkpoint, other=other, top_k=top_k, svd_sample=svd_sample,
                                         cp_threshold=cp_threshold)
        tensor_norms = report["diagnostics"].pop("tensor_norms")
        if kind == "vector":  # the same pass gives the norms: the vector is read once
            report["norms"] = norms_from(tensor_norms)
    return report


def norms_from(per_tensor: dict[str, float]) -> dict:
    """Total and per-layer L2 norms from per-tensor norms; layers in numeric order, then the
    tensors outside the blocks by name."""
    per_layer = defaultdict(float)
    for name, norm in per_tensor.items():
        per_layer[layer_of(name)] += norm * norm
    order = sorted(per_layer, key=lambda layer: (0, int(layer), "") if layer.isdigit() else (1, 0, layer))
    return {"total": math.sqrt(sum(per_layer.values())),
            "per_layer": {layer: math.sqrt(per_layer[layer]) for layer in order}, "per_tensor": per_tensor}


def render_inspect(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    console.print(f"[bold]{report['path']}[/]: {report['kind']}, {report['model_type']}, "
                  f"{report['layers']} layers, {report['tensor_count']} tensors, "
                  f"{report['parameters']:,} parameters, {report['bytes'] / 1e6:,.1f} MB in "
                  f"{len(report['files'])} file(s); dtypes {report['dtypes']}")
    if "norms" in report:
        table = Table("layer", "‖Δ‖", title=f"vector norms (total ‖Δ‖ = {report['norms']['total']:.4g})")
        for layer, value in report["norms"]["per_layer"].items():
            table.add_row(layer, f"{value:.4g}")
        console.print(table)
    elif "diagnostics" not in report:
        table = Table("tensor", "dtype", "shape", "MB")
        for tensor in report["tensors"]:
            table.add_row(tensor["name"], tensor["dtype"], str(tensor["shape"]), f"{tensor['bytes'] / 1e6:.3f}")
        console.print(table)
    if "diagnostics" in report:
        from skillgraft.vectors.diagnostics import render_diagnostics

        render_diagnostics(report["diagnostics"], console)
