"""Control vectors: a seeded random direction with each tensor's norm of a real vector, the
control for "any change of that size" (the lab demo and `lab real` graft it beside the
vector it mimics). Written in the vector layout, so the graft core applies it exactly like
the real vector."""

from __future__ import annotations

import shutil
from pathlib import Path


def random_like(vector_dir: Path, out_dir: Path, seed: int) -> Path:
    """A vector folder with a seeded random direction of the same per-tensor norm as `vector_dir`.

    Written in the vector layout (config.json + safetensors + a kind=vector manifest) so the
    graft core applies it exactly like the real vector.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from skillgraft.checkpoint import AtomicFolder, Card, write_manifest

    generator = torch.Generator().manual_seed(seed)
    with AtomicFolder(out_dir) as temp:
        for shard in sorted(vector_dir.glob("*.safetensors")):
            tensors = load_file(shard)
            fake = {}
            for name in sorted(tensors):
                delta = tensors[name].float()
                noise = torch.randn(delta.shape, generator=generator)
                norm = delta.norm()
                fake[name] = (noise * (norm / noise.norm()) if norm > 0 else torch.zeros_like(delta)).to(
                    tensors[name].dtype)
            save_file(fake, temp / shard.name, metadata={"format": "pt", "skillgraft_kind": "vector"})
        for extra in ("config.json", "model.safetensors.index.json"):
            if (vector_dir / extra).is_file():
                shutil.copy(vector_dir / extra, temp / extra)
        write_manifest(temp, kind="vector", inputs=[{"role": "norms_of", "path": str(vector_dir.resolve())}],
                       options={"seed": seed},
                       card=Card(title="Random-direction control vector", tags=["control"],
                                 summary=f"Seeded Gaussian noise with the per-tensor norm of `{vector_dir.name}`: "
                                         "the lab demo's control for \"any change of that size\"."))
    return out_dir
