"""Vector diagnostics: where a skill lives, how big it is, and whether it will transfer.

Per layer and module kind (attention / mlp / norm / embedding / other):

- ‖Δ‖ and, given the base weights W, ‖Δ‖/‖W‖. Supervised fine-tuning moves weights by
  about 0.1–2 % of their norm; continued pretraining on billions of tokens moves them much
  further. Seed 000's code vector and DARE's CodeLlama case failed for that reason: the
  "skill" was a different model. A relative norm above `CP_THRESHOLD` gets a warning.
- cosine between two deltas and the sign-conflict rate (entries where both are non-zero
  and the signs differ): two vectors that point apart will interfere when summed; ties /
  dare_ties exist for that case.
- share of energy in the top-k singular values of a sample of matrices: near 1 means the
  delta is low-rank and `vector to-lora` will ship it in megabytes with little loss.

Everything streams tensor by tensor (float32 sums with torch's cascade summation), so it is
as memory-bounded as the graft; the SVD runs only on `svd_sample` matrices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from skillgraft.checkpoint import Checkpoint
from skillgraft.errors import UserError
from skillgraft.vectors import arithmetic
from skillgraft.vectors.schedule import layer_index, module_kind

CP_THRESHOLD = 0.05  # ‖Δ‖/‖W‖ above this is "far above typical SFT deltas"


@dataclass
class DeltaSide:
    """A delta read tensor by tensor: a saved vector, or `model − base`."""

    label: str
    vector: Checkpoint | None = None
    model: Checkpoint | None = None
    base: Checkpoint | None = None

    @property
    def reference(self) -> Checkpoint:
        return self.vector if self.vector is not None else self.model

    def shape(self, name: str) -> tuple[int, ...] | None:
        """The delta's shape for `name`, or None when it has no usable float tensor there."""
        info = self.reference.tensors.get(name)
        if info is None or not info.is_float:
            return None
        if self.base is not None:
            other = self.base.tensors.get(name)
            if other is None or other.shape != info.shape or not other.is_float:
                return None
        return info.shape

    def read(self, name: str) -> torch.Tensor:
        if self.vector is not None:
            return arithmetic.scaled(self.vector.read(name), 1.0)
        return arithmetic.delta(self.base.read(name), self.model.read(name))


def open_side(path, base: Checkpoint | None, label: str, allow_pickle: bool = False) -> DeltaSide:
    """A vector folder is its own delta; a model folder needs `base` (delta = model − base)."""
    from skillgraft.checkpoint.kinds import classify

    checkpoint = Checkpoint(path, allow_pickle=allow_pickle, role=label)
    kind = classify(checkpoint.path, checkpoint).kind
    if kind == "adapter":
        raise UserError(f"{label} {checkpoint.source} is a LoRA adapter; diagnose a vector or a model (with --base)")
    if kind == "vector":
        return DeltaSide(label, vector=checkpoint)
    if base is None:
        raise UserError(f"{path} is a model, not a vector: pass --base BASE to diagnose {label} − base")
    return DeltaSide(label, model=checkpoint, base=base)


@dataclass
class Sums:
    """Running sums for one group of tensors."""

    delta_sq: float = 0.0
    weight_sq: float = 0.0
    other_sq: float = 0.0
    dot: float = 0.0
    conflicts: int = 0
    both_nonzero: int = 0
    abs_sum: float = 0.0
    count: int = 0
    has_weight: bool = False
    has_other: bool = False

    def add(self, other: "Sums") -> None:
        for item in fields(self):
            mine, theirs = getattr(self, item.name), getattr(other, item.name)
            setattr(self, item.name, (mine or theirs) if item.type == "bool" else mine + theirs)

    def summary(self) -> dict:
        norm = math.sqrt(self.delta_sq)
        out = {"norm": norm, "mean_abs": self.abs_sum / self.count if self.count else 0.0, "entries": self.count}
        if self.has_weight:
            out["weight_norm"] = math.sqrt(self.weight_sq)
            out["relative"] = norm / out["weight_norm"] if self.weight_sq else None
        if self.has_other:
            out["other_norm"] = math.sqrt(self.other_sq)
            denominator = norm * out["other_norm"]
            out["cosine"] = self.dot / denominator if denominator else None
            out["sign_conflict"] = self.conflicts / self.both_nonzero if self.both_nonzero else None
        return out


def squares(tensor: torch.Tensor, chunk: int = 1 << 22) -> float:
    """Σ x² accumulated in float64, a chunk at a time (no full-size float64 copy)."""
    flat = tensor.reshape(-1)
    return sum(float(flat[i:i + chunk].double().pow(2).sum()) for i in range(0, flat.numel(), chunk))


def tensor_sums(delta: torch.Tensor, weight: torch.Tensor | None = None, other: torch.Tensor | None = None) -> Sums:
    """The sums for one tensor (norms in float64, the rest with float32 kernels)."""
    sums = Sums(delta_sq=squares(delta), abs_sum=float(delta.abs().sum()), count=delta.numel())
    if weight is not None:
        sums.weight_sq, sums.has_weight = squares(weight), True
    if other is not None:
        sums.other_sq, sums.dot, sums.has_other = squares(other), float((delta * other).sum()), True
        product = delta.sign() * other.sign()
        sums.conflicts, sums.both_nonzero = int((product < 0).sum()), int((product != 0).sum())
    return sums


EXACT_SVD_MAX = 512  # a full SVD of a 4096² matrix takes minutes on 2 cores; above this side, randomized


def energy_share(matrix: torch.Tensor, top_k: int) -> tuple[float, bool]:
    """(Σ of the top-k squared singular values over ‖matrix‖²_F, exact?) — 1.0 for a zero matrix.

    Small matrices get an exact SVD; larger ones torch.svd_lowrank (Halko et al., seeded, so
    repeatable), which estimates the top singular values from below: the share is a lower bound.
    """
    matrix = matrix.float()
    total = float(matrix.pow(2).sum())
    if total == 0:
        return 1.0, True
    if min(matrix.shape) <= EXACT_SVD_MAX:
        values = torch.linalg.svdvals(matrix)[:top_k]
        exact = True
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _, values, _ = torch.svd_lowrank(matrix, q=min(2 * top_k + 10, min(matrix.shape)), niter=6)
        values, exact = values[:top_k], False
    return min(1.0, float(values.pow(2).sum()) / total), exact


def _svd_sample(names: list[str], shapes: dict, sample: int) -> list[str]:
    """Up to `sample` 2-D non-embedding matrices spread evenly over the model's depth."""
    matrices = [n for n in names if len(shapes[n]) == 2 and min(shapes[n]) > 1 and module_kind(n) != "embedding"]
    if sample <= 0 or not matrices:
        return []
    if len(matrices) <= sample:
        return matrices
    step = (len(matrices) - 1) / max(sample - 1, 1)
    return sorted({matrices[round(i * step)] for i in range(sample)})


def diagnose(side: DeltaSide, *, base: Checkpoint | None = None, other: DeltaSide | None = None,
             top_k: int = 8, svd_sample: int = 8, cp_threshold: float = CP_THRESHOLD) -> dict:
    """Per (layer, module) norms, relative norms, cosine and sign conflicts, plus SVD energy."""
    if top_k < 1:
        raise UserError(f"--top-k {top_k} must be at least 1")
    names = [n for n in side.reference.names if side.shape(n) is not None]
    shapes = {n: side.shape(n) for n in names}
    svd_names = set(_svd_sample(names, shapes, svd_sample))
    groups: dict[tuple[str, str], Sums] = {}
    total, body, matrices = Sums(), Sums(), Sums()
    svd, skipped, tensor_norms = [], [], {}
    for name in names:
        delta = side.read(name)
        weight = None
        if base is not None:
            info = base.tensors.get(name)
            if info is not None and info.shape == shapes[name] and info.is_float:
                weight = base.read(name)
        other_delta = None
        if other is not None:
            if other.shape(name) == shapes[name]:
                other_delta = other.read(name)
            else:
                skipped.append({"tensor": name, "reason": f"not comparable in {other.label}"})
        sums = tensor_sums(delta, weight, other_delta)
        tensor_norms[name] = math.sqrt(sums.delta_sq)
        layer = layer_index(name)
        kind = module_kind(name)
        key = ("-" if layer is None else str(layer), kind)
        groups.setdefault(key, Sums()).add(sums)
        total.add(sums)
        if kind != "embedding":
            body.add(sums)
        if kind not in ("embedding", "norm"):
            matrices.add(sums)
        if name in svd_names:
            energy, exact = energy_share(delta, top_k)
            svd.append({"tensor": name, "shape": list(shapes[name]), "top_k": top_k, "energy": energy,
                        "exact": exact})
    order = sorted(groups, key=lambda k: (k[0] == "-", int(k[0]) if k[0] != "-" else 0, k[1]))
    report = {
        "delta": side.label,
        "groups": [{"layer": layer, "module": kind, **groups[(layer, kind)].summary()} for layer, kind in order],
        "total": total.summary(),
        "without_embeddings": body.summary(),
        "matrices": matrices.summary(),
        "svd": svd,
        "skipped": skipped,
        "warnings": [],
        "tensor_norms": tensor_norms,
    }
    relative = report["matrices"].get("relative")
    report["cp_threshold"] = cp_threshold
    if relative is not None and relative > cp_threshold:
        report["warnings"].append(
            f"{side.label}: ‖Δ‖/‖W‖ = {relative:.3g} in the attention/MLP matrices, far above typical fine-tuning "
            f"deltas (≤ {cp_threshold:g}); this looks like continued pretraining, and such deltas often do not "
            "transfer (seed 000's code vector, DARE's CodeLlama case)")
    return report


def transfer_report(base_dir, skilled_dir, target_dir, *, top_k: int = 8, svd_sample: int = 8,
                    allow_pickle: bool = False, cp_threshold: float = CP_THRESHOLD) -> dict:
    """Compare the skill delta (skilled − base) with the target's own drift (target − base)."""
    base = Checkpoint(base_dir, allow_pickle=allow_pickle, role="base")
    skill = DeltaSide("skill (skilled − base)", model=Checkpoint(skilled_dir, allow_pickle=allow_pickle,
                                                                   role="skilled"), base=base)
    drift = DeltaSide("drift (target − base)", model=Checkpoint(target_dir, allow_pickle=allow_pickle,
                                                                  role="target"), base=base)
    report = diagnose(skill, base=base, other=drift, top_k=top_k, svd_sample=svd_sample, cp_threshold=cp_threshold)
    drift_only = diagnose(drift, base=base, top_k=top_k, svd_sample=0)
    report.pop("tensor_norms")
    body = report["matrices"]
    report["drift"] = {key: drift_only[key] for key in ("total", "without_embeddings", "matrices")}
    drift_norm = report["drift"]["matrices"]["norm"]
    report["skill_to_drift"] = body["norm"] / drift_norm if drift_norm else None  # ‖skill‖ / ‖drift‖
    report["inputs"] = {"base": str(Path(base_dir)), "skilled": str(Path(skilled_dir)), "target": str(Path(target_dir))}
    if body.get("cosine") is not None and abs(body["cosine"]) > 0.5:
        report["warnings"].append(
            f"the skill delta and the target's drift are strongly aligned (cosine {body['cosine']:.2f}): the "
            "target may already hold this skill, and grafting adds it twice")
    return report


def render_diagnostics(report: dict, console) -> None:
    """The human table for `inspect --base/--compare/--transfer`."""
    from rich.table import Table

    groups = report["groups"]
    columns = ["layer", "module", "‖Δ‖", "mean|Δ|"]
    has_rel = any("relative" in g for g in groups)
    has_cos = any("cosine" in g for g in groups)
    columns += (["‖Δ‖/‖W‖"] if has_rel else []) + (["cosine", "sign conflict"] if has_cos else [])
    table = Table(*columns, title=f"diagnostics of {report['delta']}")

    def fmt(value, pattern="{:.4g}"):
        return "–" if value is None else pattern.format(value)

    for row in [*groups, {"layer": "all", "module": "attention+mlp", **report["matrices"]},
                {"layer": "all", "module": "(no embeddings)", **report["without_embeddings"]},
                {"layer": "all", "module": "all", **report["total"]}]:
        cells = [row["layer"], row["module"], fmt(row["norm"]), fmt(row["mean_abs"])]
        cells += [fmt(row.get("relative"))] if has_rel else []
        cells += [fmt(row.get("cosine"), "{:.3f}"), fmt(row.get("sign_conflict"), "{:.1%}")] if has_cos else []
        table.add_row(*cells)
    console.print(table)
    if report["svd"]:
        svd = Table("matrix", "shape", "top-k", "energy in top-k", title="singular-value energy (sample)")
        for row in report["svd"]:
            svd.add_row(row["tensor"], str(row["shape"]), str(row["top_k"]), f"{row['energy']:.1%}")
        console.print(svd)
    if "drift" in report:
        drift = report["drift"]["matrices"]
        console.print(f"target drift (attention+mlp): ‖Δ‖ = {drift['norm']:.4g}, "
                      f"‖Δ‖/‖W‖ = {fmt(drift.get('relative'))}; ‖skill‖/‖drift‖ = {fmt(report['skill_to_drift'])}")
    for warning in report["warnings"]:
        console.print(f"[bold yellow]warning:[/] {warning}")
