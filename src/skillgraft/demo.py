"""`skillgraft demo`: the built-in default run.

When the lab world's shipped checkpoints are present, the demo is the lab's chat-vector
experiment (`skillgraft.lab.demo.run_demo`). Otherwise it falls back to a self-check of the
graft core on tiny random checkpoints: extract a vector, graft it, and prove exactness.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def run(out: Path | None, *, seed: int = 0, as_json: bool = False) -> dict:
    try:
        from skillgraft.lab.demo import run_demo, shipped_available
    except ImportError:
        run_demo = None
    if run_demo is not None and shipped_available():
        return run_demo(out, seed=seed, as_json=as_json)
    return graft_selfcheck(out, seed=seed, as_json=as_json)


def _equal_tensors(folder_a: Path, folder_b: Path) -> tuple[bool, int]:
    from skillgraft.checkpoint import Checkpoint

    a, b = Checkpoint(folder_a), Checkpoint(folder_b)
    if set(a.tensors) != set(b.tensors):
        return False, 0
    differing = sum(1 for name in a.names if a.read_raw(name) != b.read_raw(name))
    return differing == 0, len(a.tensors)


def graft_selfcheck(out: Path | None, *, seed: int = 0, as_json: bool = False) -> dict:
    """Tiny random base / skilled / CP models: extract, graft, and check the arithmetic."""
    import torch

    from skillgraft.checkpoint import Checkpoint, verify
    from skillgraft.tiny import build_tiny_model, perturb_model
    from skillgraft.vectors import extract, graft

    work = Path(out) if out else Path(tempfile.mkdtemp(prefix="skillgraft-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: print(*a, file=sys.stderr)) if as_json else print
    say(f"skillgraft demo (graft core self-check) in {work}")
    base = build_tiny_model(work / "base", "llama", seed=seed, dtype="bfloat16", shard_size="40KB")
    skilled = perturb_model(base, work / "skilled", seed=seed + 1, shard_size="25KB")
    cp = perturb_model(base, work / "cp", seed=seed + 2, shard_size="60KB")
    extract(base, skilled, work / "vector", force=True)
    graft(base, work / "roundtrip", vectors=[(work / "vector", 1.0)], with_embeddings=True, force=True)
    graft(cp, work / "cp+vector", vectors=[(work / "vector", 1.0)], force=True)

    checks = []
    same, count = _equal_tensors(work / "roundtrip", skilled)
    checks.append({"check": "graft(base, extract(base, skilled)) == skilled, bit for bit",
                   "ok": same, "detail": f"{count} tensors"})
    target, vector, grafted = Checkpoint(cp), Checkpoint(work / "vector"), Checkpoint(work / "cp+vector")
    mismatched, changed = 0, 0
    for name in target.names:
        original = target.read(name)
        expected = original
        if name in vector.tensors and not name.endswith(("embed_tokens.weight", "lm_head.weight")):
            expected = (original.float() + vector.read(name)).to(original.dtype)
            changed += 1
        mismatched += int(not torch.equal(expected, grafted.read(name)))
    checks.append({"check": "cp+vector equals the in-memory reference loop (embeddings kept)",
                   "ok": mismatched == 0, "detail": f"{changed} tensors grafted, {mismatched} differ"})
    for folder in ("vector", "roundtrip", "cp+vector"):
        report = verify(work / folder)
        checks.append({"check": f"verify {folder}", "ok": report["ok"], "detail": f"{report['files']} files"})
    for row in checks:
        say(f"  [{'ok' if row['ok'] else 'FAIL'}] {row['check']} ({row['detail']})")
    say("The lab world's chat-vector demo needs its shipped checkpoints; this run checked the graft core only.")
    return {"demo": "graft-selfcheck", "out": str(work), "checks": checks, "ok": all(r["ok"] for r in checks)}
