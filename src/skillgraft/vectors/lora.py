"""`skillgraft vector to-lora`: a vector as a peft LoRA adapter, by truncated SVD per weight.

For each linear weight's delta ΔW (out × in) = U·S·Vᵀ, the adapter keeps the top r singular
triplets, split evenly between the factors (B = U_r·√S_r, A = √S_r·V_rᵀ) with lora_alpha = r,
so peft's `scaling = alpha / r` is 1 and B·A is the best rank-r approximation of ΔW. The
relative error ‖ΔW − B·A‖ / ‖ΔW‖ = √(Σ_{i>r} σ_i²) / √(Σ σ_i²) is exact from the spectrum and
reported per module. `energy` picks, per module, the smallest r keeping that share of Σσ².
Matrices above EXACT_SVD_MAX on the short side use a seeded randomized SVD (a full one of a
4096² matrix takes minutes on a CPU); their error is measured on the residual.

Deltas a LoRA adapter cannot hold (norm weights, biases, embeddings and the head) are
listed with their norm, so the user sees what the adapter leaves out. A skill then ships
as megabytes and is switched on and off at load time (`PeftModel.from_pretrained`).
peft is imported only to write its own config file.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from skillgraft.checkpoint import MANIFEST, AtomicFolder, Card, Checkpoint, check_output, read_manifest, write_manifest
from skillgraft.checkpoint.manifest import input_record
from skillgraft.errors import UserError
from skillgraft.checkpoint.kinds import require_vector
from skillgraft.vectors.rules import TensorFilter
from skillgraft.vectors.schedule import layer_index, module_kind

ADAPTER_WEIGHTS = "adapter_model.safetensors"


EXACT_SVD_MAX = 1024  # above this short side, a full SVD costs minutes on a CPU: use a randomized one


def choose_rank(singular: torch.Tensor, *, rank: int | None, energy: float | None, max_rank: int | None,
                total: float | None = None) -> int:
    """The rank for one matrix: fixed, or the smallest that keeps `energy` of ‖ΔW‖² (= Σσ²;
    `total` gives it when `singular` holds only the leading values)."""
    available = int((singular > 0).sum())
    if rank is not None:
        chosen = rank
    else:
        squares = singular.double().pow(2)
        share = squares.cumsum(0) / (total if total is not None else squares.sum())
        chosen = int((share < energy - 1e-12).sum()) + 1
    if max_rank is not None:
        chosen = min(chosen, max_rank)
    return max(1, min(chosen, available, singular.numel()))


def _leading_svd(delta: torch.Tensor, q: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The q leading singular triplets by torch.svd_lowrank, seeded so runs repeat."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        u, s, v = torch.svd_lowrank(delta, q=min(q + 10, min(delta.shape)), niter=4)
    return u, s, v.T


def factorize(delta: torch.Tensor, *, rank: int | None = None, energy: float | None = None,
              max_rank: int | None = None) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """(A, B, relative error ‖Δ − BA‖/‖Δ‖, r) with B·A the best rank-r approximation of `delta`
    (exact SVD up to EXACT_SVD_MAX on the short side; above, a randomized SVD whose error is
    then measured on the residual, so the reported number is still exact)."""
    delta = delta.float()
    total = float(delta.double().pow(2).sum())
    short = min(delta.shape)
    if short <= EXACT_SVD_MAX:
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        r = choose_rank(s, rank=rank, energy=energy, max_rank=max_rank)
        squares = s.double().pow(2)
        error = math.sqrt(float(squares[r:].sum()) / total) if total > 0 else 0.0
    else:
        q = rank if rank is not None else 32
        while True:
            q = min(q, max_rank or q, short)
            u, s, vh = _leading_svd(delta, q)
            reached = rank is not None or float(s.double().pow(2).sum()) >= (energy - 1e-12) * total
            if reached or q >= min(short, max_rank or short):
                break
            q *= 2
        r = choose_rank(s, rank=rank, energy=energy, max_rank=max_rank, total=total)
        error = None
    root = s[:r].sqrt()
    b = (u[:, :r] * root).contiguous()
    a = (root[:, None] * vh[:r]).contiguous()
    if error is None:
        error = math.sqrt(float(torch.addmm(delta, b, a, alpha=-1).double().pow(2).sum()) / total) if total else 0.0
    return a, b, error, r


def _module_name(name: str) -> str | None:
    """'model.layers.0.mlp.up_proj.weight' -> its Linear module; None for what LoRA cannot hold."""
    if not name.endswith(".weight") or layer_index(name) is None or module_kind(name) not in ("attention", "mlp"):
        return None
    return name[: -len(".weight")]


def vector_to_lora(vector_dir, out_dir, *, rank: int | None = None, energy: float | None = None,
                   max_rank: int | None = None, include=(), exclude=(), dtype: str = "float32",
                   force: bool = False, quiet: bool = True, allow_pickle: bool = False,
                   assume_vector: bool = False) -> dict:
    """Write a peft LoRA adapter approximating the vector's linear-weight deltas."""
    if (rank is None) == (energy is None):
        raise UserError("give exactly one of --rank R or --energy E")
    if rank is not None and rank < 1:
        raise UserError(f"--rank {rank} must be at least 1")
    if energy is not None and not 0 < energy <= 1:
        raise UserError(f"--energy {energy:g} is a share of Σσ²: a number in (0, 1]")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"--dtype {dtype!r} is not one of float32, bfloat16, float16")
    vector = Checkpoint(vector_dir, allow_pickle=allow_pickle, role="vector")
    require_vector(vector, assume_vector=assume_vector)
    manifest = read_manifest(vector.path) if (vector.path / MANIFEST).is_file() else {}
    if vector.model_type == "gpt2":
        raise UserError(f"{vector.path}: GPT-2 stores linear weights as Conv1D (in × out); vector to-lora "
                        "supports (out × in) Linear layouts (Llama, Mistral, Qwen2, ...)")
    out = Path(out_dir)
    check_output(out, [vector.path], force=force)
    selection = TensorFilter(list(include), list(exclude))

    tensors, modules, left_out = {}, [], []
    ranks, alphas = {}, {}
    for name in vector.names:
        info = vector.tensors[name]
        if not info.is_float:
            continue
        module = _module_name(name)
        reason = selection.reason_to_skip(name)
        if reason is None and (module is None or len(info.shape) != 2):
            reason = "not a linear weight (LoRA cannot hold it)"
        if reason is not None:
            norm = float(vector.read(name).float().norm()) if "LoRA" in reason else None
            left_out.append({"tensor": name, "reason": reason, **({"norm": norm} if norm is not None else {})})
            continue
        delta = vector.read(name).float()
        norm = float(delta.norm())
        if norm == 0.0:
            left_out.append({"tensor": name, "reason": "zero delta", "norm": 0.0})
            continue
        a, b, error, r = factorize(delta, rank=rank, energy=energy, max_rank=max_rank)
        torch_dtype = getattr(torch, dtype)
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.to(torch_dtype)
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.to(torch_dtype)
        ranks[module], alphas[module] = r, r
        modules.append({"module": module, "shape": list(info.shape), "rank": r, "norm": norm,
                        "relative_error": error})
        if not quiet:
            import sys

            print(f"to-lora: {module} rank {r}, relative error {error:.3g}", file=sys.stderr)
    if not modules:
        chosen = [n for n in vector.names if selection.reason_to_skip(n) is None]
        rule = ("--include/--exclude leave no tensor" if not chosen else
                "none of the selected tensors is a non-zero linear weight delta of an attention or MLP layer")
        raise UserError(f"to-lora would touch no tensor: {rule}; nothing was written ({vector.source} has "
                        f"{len(vector.names)} tensors)")
    kept_sq = sum((m["norm"] * m["relative_error"]) ** 2 for m in modules)
    linear_sq = sum(m["norm"] ** 2 for m in modules)
    dropped_sq = sum(e.get("norm", 0.0) ** 2 for e in left_out if "LoRA" in e["reason"])
    summary = {"modules": len(modules), "parameters": sum(t.numel() for t in tensors.values()),
               "relative_error_linear": math.sqrt(kept_sq / linear_sq),
               "relative_error_all": math.sqrt((kept_sq + dropped_sq) / (linear_sq + dropped_sq)),
               "max_rank": max(ranks.values())}

    from peft import LoraConfig
    from safetensors.torch import save_file

    top = max(ranks.values())
    config = LoraConfig(
        task_type="CAUSAL_LM", r=top, lora_alpha=top, lora_dropout=0.0, bias="none",
        target_modules="^(" + "|".join(re.escape(m) for m in ranks) + ")$",
        rank_pattern={re.escape(m): r for m, r in ranks.items() if r != top},
        alpha_pattern={re.escape(m): r for m, r in ranks.items() if r != top},
        base_model_name_or_path=_base_path(manifest),
    )
    with AtomicFolder(out, force=force) as temp:
        save_file(tensors, str(temp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        config.save_pretrained(str(temp))
        result = write_manifest(
            temp, kind="adapter", inputs=[input_record("vector", vector)],
            options={"rank": rank, "energy": energy, "max_rank": max_rank, "include": list(include),
                     "exclude": list(exclude), "dtype": dtype},
            extra={"lora": summary, "modules": modules, "left_out": left_out},
            card=Card(title=f"LoRA adapter from {vector.source}", tags=["lora", "task-vector"],
                      summary=f"A truncated SVD of the vector's linear-weight deltas ({summary['modules']} modules, rank "
                              f"≤ {summary['max_rank']}); relative error {summary['relative_error_linear']:.3g} on "
                              "the linear weights. Load it with `PeftModel.from_pretrained(base, THIS_FOLDER)`."))
    return {"output": str(out), **result}


def _base_path(manifest: dict) -> str | None:
    for entry in manifest.get("inputs", []) if isinstance(manifest.get("inputs"), list) else []:
        if isinstance(entry, dict) and entry.get("role") == "base":
            return entry.get("path")
    return None


def describe(result: dict) -> str:
    summary = result["lora"]
    return (f"adapter written to {result['output']}: {summary['modules']} modules, rank ≤ {summary['max_rank']}, "
            f"{summary['parameters']:,} parameters; relative error {summary['relative_error_linear']:.3g} on the "
            f"linear weights, {summary['relative_error_all']:.3g} with what LoRA cannot hold "
            f"({len([e for e in result['left_out'] if 'LoRA' in e['reason']])} tensors left out)\n"
            + "\n".join(f"  {m['module']}: rank {m['rank']}, relative error {m['relative_error']:.3g}"
                        for m in result["modules"]))
