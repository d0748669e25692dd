"""Graft benchmark: skillgraft vs mergekit vs the seeds' in-memory loop vs an I/O floor.

Builds three synthetic Llama-layout checkpoints (bf16, sharded, different shard boundaries
per input) per size, then times on the same inputs, in one run, each in its own process so
peak resident memory (ru_maxrss from wait4) is that job's alone. Sizes are 0.8B-style
models (hidden 2048, 32k vocabulary, as many layers as the size needs) or `70b-shape`: two
layers of Llama-3-70B's tensors (hidden 8192, MLP 28672, 8 KV heads, 128,256-token
vocabulary; the target's is 141,000 tokens, so its embedding and head differ in shape),
with word-level tokenizers so rows can be matched by token.

  floor          plain reads of the three inputs (each byte once), the target's written out as
                 read (+sha256: hashing the output as a manifest needs; +torch: after
                 `import torch`, which every other job pays at start-up)
  sg-one-pass    skillgraft graft TARGET --delta BASE SKILLED
  sg-with-embeddings   the same with --with-embeddings (70b-shape: rows matched by token)
  sg-two-step    skillgraft extract BASE SKILLED, then graft TARGET VECTOR
  mergekit       task_arithmetic (base=BASE; SKILLED weight 1 with embed/lm_head 0; TARGET 1)
  seeds-loop     three AutoModelForCausalLM loads, state_dict loop, save_pretrained
  sg-sum-2-deltas  skillgraft graft BASE --delta BASE SKILLED --delta BASE TARGET --with-embeddings
                 (the plain sum of the deltas the merge methods below combine: their time baseline)
  sg-ties        skillgraft graft BASE --delta BASE SKILLED --delta BASE TARGET --method ties
                 --density 0.5 --with-embeddings (both deltas merged onto the base, every tensor)
  mergekit-ties  mergekit ties, base_model=BASE, SKILLED and TARGET with weight 1, density 0.5
  sg-dare_ties / mergekit-dare_ties   the same with dare_ties (random masks: no agreement check)

At 70b-shape the jobs that hold whole models or whole-tensor copies (seeds-loop, mergekit,
the agreement and exactness checks) do not fit 24 GB and are left out; skillgraft's merge
methods work on row blocks and run at every size.

Usage: python benchmarks/graft_bench.py [--sizes 0.8,1.6,70b-shape] [--methods sum,ties,dare_ties]
                                        [--work DIR] [--mergekit-python PATH]
mergekit runs from its own virtualenv (default /work/bench-work/mergekit-venv): make it with
`python3 -m venv V && V/bin/pip install -c constraints.txt mergekit`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shape:
    """A synthetic Llama layout: tensor shapes, layer count, and the target's vocabulary."""

    label: str
    hidden: int
    intermediate: int
    vocab: int  # base and skilled
    target_vocab: int
    heads: int
    kv_heads: int
    layers: int
    tokenizers: bool  # word-level tokenizers, so --with-embeddings matches rows by token

    @property
    def whole_tensors_fit(self) -> bool:
        """Whether the jobs that hold whole models or whole-tensor copies (seeds' loop,
        exactness checks, merge methods, mergekit) fit this machine's 24 GB."""
        return self.hidden < 8192


SMALL = dict(hidden=2048, intermediate=5632, vocab=32000, target_vocab=32000, heads=16, kv_heads=16, tokenizers=False)
LLAMA3_70B = dict(hidden=8192, intermediate=28672, vocab=128256, target_vocab=141000, heads=64, kv_heads=8,
                  tokenizers=True)


def shape_for(size: str) -> Shape:
    """'0.8' -> a 0.8B model of SMALL tensors; '70b-shape' -> two layers of Llama-3-70B's tensors."""
    if size.lower() == "70b-shape":
        return Shape("70B-shaped", layers=2, **LLAMA3_70B)
    per_layer = 4 * SMALL["hidden"] ** 2 + 3 * SMALL["hidden"] * SMALL["intermediate"] + 2 * SMALL["hidden"]
    embed = 2 * SMALL["vocab"] * SMALL["hidden"] + SMALL["hidden"]
    return Shape(f"{float(size):g}B", layers=max(1, round((float(size) * 1e9 - embed) / per_layer)), **SMALL)


def tensor_shapes(shape: Shape, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    h, kv = shape.hidden, shape.hidden * shape.kv_heads // shape.heads
    shapes = [("model.embed_tokens.weight", (vocab, h))]
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
        shapes += [(p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                   (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, h))]
        shapes += [(p + "mlp.gate_proj.weight", (shape.intermediate, h)),
                   (p + "mlp.up_proj.weight", (shape.intermediate, h)),
                   (p + "mlp.down_proj.weight", (h, shape.intermediate))]
    return shapes + [("model.norm.weight", (h,)), ("lm_head.weight", (vocab, h))]


def generator(*key: int):
    """A torch generator seeded from integers, the same in every process (int tuples hash stably)."""
    import torch

    return torch.Generator().manual_seed(hash(key) & (2**63 - 1))


def write_checkpoint(folder: Path, shape: Shape, role: str, seed: int, noise_seed: int | None,
                     shard_bytes: int) -> None:
    """Base weights N(0, 0.02²) from `seed` (norm weights N(1, 0.02²)); skilled/target add
    N(0, 0.002²) noise from `noise_seed`. Written a block of rows at a time through skillgraft's shard writer, so
    even a 2 GB embedding is never whole in memory; block k of a tensor has the same values
    whatever the row count, so the target's larger embedding starts with the base's rows."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import torch

    from skillgraft.checkpoint import PlannedTensor, ShardedWriter

    vocab = shape.target_vocab if role == "target" else shape.vocab
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": shape.hidden,
              "intermediate_size": shape.intermediate, "num_hidden_layers": shape.layers,
              "num_attention_heads": shape.heads, "num_key_value_heads": shape.kv_heads, "vocab_size": vocab,
              "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
              "torch_dtype": "bfloat16", "dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if shape.tokenizers:
        write_tokenizer(folder, vocab, renumbered=role == "target")
    plan = [PlannedTensor(name, "BF16", dims) for name, dims in tensor_shapes(shape, vocab)]
    writer = ShardedWriter(folder, plan, shard_bytes)
    for index, planned in enumerate(plan):
        rows, width = planned.shape[0], math.prod(planned.shape[1:])
        step = max(1, (1 << 24) // width)
        for block, first in enumerate(range(0, rows, step)):
            dims = (min(step, rows - first), *planned.shape[1:])
            values = torch.randn(dims, generator=generator(seed, index, block)) * 0.02
            if len(dims) == 1:  # norm weights sit near 1, as in trained models
                values += 1.0
            if noise_seed is not None:
                values += torch.randn(dims, generator=generator(noise_seed, index, block)) * 0.002
            writer.write(planned.name, values.to(torch.bfloat16))
    writer.close()


def write_tokenizer(folder: Path, vocab: int, renumbered: bool) -> None:
    """A word-level tokenizer of `vocab` entries; the target's puts its extra words first, so
    every shared token has another id there (rows are matched by token string)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from skillgraft.lab.tiny import CHAT_TOKENS, SPECIAL_TOKENS, build_tokenizer

    shared = [f"w{i}" for i in range(LLAMA3_70B["vocab"] - len(SPECIAL_TOKENS) - len(CHAT_TOKENS))]
    extra = [f"x{i}" for i in range(vocab - LLAMA3_70B["vocab"])] if renumbered else []
    build_tokenizer([*extra, *shared]).save_pretrained(folder)


# -- child jobs (each runs in its own process) ------------------------------------------------
def child_floor(base: str, skilled: str, target: str, out: str, hash_output: str = "", import_torch: str = "") -> None:
    """Read every input byte once, write an output of the target's size: the I/O floor. The
    target's bytes are written as they are read (reading them a second time for the copy
    came from disk at 70b-shape, where the page cache cannot hold the inputs). With
    `hash_output`, also sha256 the bytes written (what a manifest costs on top); with
    `import_torch`, first import torch, the start-up cost every torch-based job pays."""
    import hashlib

    if import_torch:
        import torch  # noqa: F401

    chunk = bytearray(64 << 20)
    view = memoryview(chunk)
    for folder in (base, skilled):
        for file in sorted(Path(folder).glob("*.safetensors")):
            with open(file, "rb", buffering=0) as handle:
                while handle.readinto(view):
                    pass
    Path(out).mkdir(parents=True, exist_ok=True)
    for file in sorted(Path(target).glob("*.safetensors")):
        digest = hashlib.sha256()
        with open(file, "rb", buffering=0) as src, open(Path(out) / file.name, "wb", buffering=0) as dst:
            while count := src.readinto(view):
                dst.write(view[:count])
                if hash_output:
                    digest.update(view[:count])


def child_seeds_loop(base: str, skilled: str, target: str, out: str) -> None:
    """The recipe of seeds 001/004, as users run it in a notebook."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": torch.bfloat16}
    plm = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    chat = AutoModelForCausalLM.from_pretrained(skilled, **kwargs)
    cp = AutoModelForCausalLM.from_pretrained(target, **kwargs)
    exclude = {"model.embed_tokens.weight", "lm_head.weight"}
    chat_vector = {}
    plm_state = plm.state_dict()
    for name, param in chat.state_dict().items():
        if name not in exclude:
            chat_vector[name] = param - plm_state[name]
    with torch.no_grad():
        for name, param in cp.state_dict().items():
            if name in chat_vector:
                param.data += chat_vector[name].to(param.device)
    cp.save_pretrained(out)


def child_build(folder: str, size: str, role: str, seed: str, noise_seed: str, shard_bytes: str) -> None:
    write_checkpoint(Path(folder), shape_for(size), role, int(seed), None if noise_seed == "-" else int(noise_seed),
                     int(shard_bytes))


def child_compare(folder_a: str, folder_b: str, out_json: str, *operands: str) -> None:
    """Largest |a − b| in bf16 rounding steps at the operands' magnitude (the largest of
    the inputs' and outputs' values at that position): each rounding the arithmetic does
    happens at that scale, so one step per rounding is the honest unit even where the
    result is near zero."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import torch

    from skillgraft.checkpoint import Checkpoint

    a, b = Checkpoint(folder_a), Checkpoint(folder_b)
    inputs = [Checkpoint(folder) for folder in operands]
    if set(a.tensors) != set(b.tensors):
        raise SystemExit(f"{folder_a} and {folder_b} hold different tensor names")
    worst, differing = 0.0, 0
    for name in a.names:
        x, y = a.read(name).float(), b.read(name).float()
        magnitude = torch.maximum(x.abs(), y.abs())
        for checkpoint in inputs:
            magnitude = torch.maximum(magnitude, checkpoint.read(name).float().abs())
        step = torch.exp2(torch.floor(torch.log2(magnitude.clamp_min(1e-30))) - 7)  # bf16: 8 significant bits
        worst = max(worst, float(((x - y).abs() / step).max()))
        differing += int((x != y).sum())
    Path(out_json).write_text(json.dumps({"max_steps": worst, "differing_values": differing}))


def child_exact(out_json: str, base: str, skilled: str, target: str, *outputs: str) -> None:
    """Distance of each output from the exact task-arithmetic result, exact = target +
    (skilled − base) in float64 (target alone for embed_tokens and lm_head, which every job
    keeps), two ways: in bf16 steps of the result (a correctly rounded output is within 0.5;
    where the sum nearly cancels, any rounding of an operand shows as many steps) and in
    steps at the operands' scale, as `child_compare` measures (each bf16 rounding on the way
    adds up to 0.5 there)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import torch

    from skillgraft.checkpoint import Checkpoint

    b, s, t = Checkpoint(base), Checkpoint(skilled), Checkpoint(target)
    outs = {folder: Checkpoint(folder) for folder in outputs}
    def steps(magnitude):
        return torch.exp2(torch.floor(torch.log2(magnitude.clamp_min(1e-30))) - 7)

    worst = {(folder, unit): 0.0 for folder in outputs for unit in ("result", "operands")}
    for name in t.names:
        operands = [c.read(name).double() for c in (t, s, b)]
        exact = operands[0].clone()
        if "embed_tokens" not in name and "lm_head" not in name:
            exact += operands[1] - operands[2]
        scale = exact.abs()
        for operand in operands:
            scale = torch.maximum(scale, operand.abs())
        units = {"result": steps(exact.abs()), "operands": steps(scale)}
        for folder, checkpoint in outs.items():
            error = (checkpoint.read(name).double() - exact).abs()
            for unit, step in units.items():
                worst[folder, unit] = max(worst[folder, unit], float((error / step).max()))
    Path(out_json).write_text(json.dumps({f"{Path(f).name} ({unit})": w for (f, unit), w in worst.items()}))


CHILDREN = {"floor": child_floor, "seeds-loop": child_seeds_loop, "build": child_build, "compare": child_compare,
            "exact": child_exact}


# -- harness -------------------------------------------------------------------------------------
def measure(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"benchmark job failed ({process.returncode}): {' '.join(command)}\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def mergekit_config(work: Path, base: Path, skilled: Path, target: Path) -> Path:
    config = {
        "merge_method": "task_arithmetic", "base_model": str(base), "dtype": "bfloat16",
        "parameters": {"normalize": False},
        "models": [
            {"model": str(skilled), "parameters": {"weight": [
                {"filter": "embed_tokens", "value": 0.0}, {"filter": "lm_head", "value": 0.0}, {"value": 1.0}]}},
            {"model": str(target), "parameters": {"weight": 1.0}},
        ],
    }
    import yaml

    path = work / "mergekit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def mergekit_merge_config(work: Path, method: str, base: Path, skilled: Path, target: Path,
                          density: float) -> Path:
    """mergekit's ties / dare_ties on the two deltas (SKILLED − BASE, TARGET − BASE)."""
    import yaml

    models = [{"model": str(m), "parameters": {"weight": 1.0, "density": density}} for m in (skilled, target)]
    config = {"merge_method": method, "base_model": str(base), "dtype": "bfloat16",
              "parameters": {"normalize": True, "int8_mask": False}, "models": models}
    path = work / f"mergekit-{method}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_methods(methods: list[str], folder: Path, paths: dict, sg: list[str], env: dict, mergekit_python,
                record, whole_tensors_fit: bool, density: float = 0.5) -> dict:
    """The sg-METHOD rows, the plain sum of the same two deltas beside them (sg-sum-2-deltas),
    and mergekit-METHOD where whole tensors fit; returns ties' output agreement (if both ran)."""
    base, skilled, target = (str(paths[n]) for n in ("base", "skilled", "target"))
    agreement = {}
    summed = folder / "out-sg-sum2"
    shutil.rmtree(summed, ignore_errors=True)
    record("sg-sum-2-deltas", *measure(sg + ["graft", base, "--delta", base, skilled, "--delta", base, target,
                                             "--with-embeddings", "-o", str(summed), "--quiet"], env))
    shutil.rmtree(summed, ignore_errors=True)
    for method in methods:
        ours, theirs = folder / f"out-sg-{method}", folder / f"out-mk-{method}"
        for path in (ours, theirs):
            shutil.rmtree(path, ignore_errors=True)
        record(f"sg-{method}", *measure(sg + ["graft", base, "--delta", base, skilled, "--delta", base, target,
                                              "--method", method, "--density", str(density), "--with-embeddings",
                                              "-o", str(ours), "--quiet"], env))
        if mergekit_python and whole_tensors_fit:
            config = mergekit_merge_config(folder, method, paths["base"], paths["skilled"], paths["target"], density)
            mergekit = str(Path(mergekit_python).parent / "mergekit-yaml")
            record(f"mergekit-{method}", *measure([mergekit, str(config), str(theirs), "--lazy-unpickle",
                                                   "--out-shard-size", "5B"]))
            if method == "ties":
                report = folder / "agree-ties.json"
                me = str(Path(__file__).resolve())
                measure([sys.executable, me, "--child", "compare", str(ours), str(theirs), str(report),
                         base, skilled, target])
                agreement["sg-ties vs mergekit-ties"] = json.loads(report.read_text())
        for path in (ours, theirs):
            shutil.rmtree(path, ignore_errors=True)
    return agreement


def weight_hashes(folder: Path) -> dict:
    """The sha256 of an output's weight files, from its manifest (to compare outputs without
    keeping both on disk)."""
    files = json.loads((folder / "skillgraft.json").read_text())["files"]
    return {name: digest for name, digest in files.items() if name.endswith((".safetensors", ".index.json"))}


def run_size(size: str, work: Path, mergekit_python: str | None,
             methods: tuple[str, ...] = ("sum", "ties", "dare_ties")) -> list[dict]:
    shape = shape_for(size)
    folder = work / shape.label
    paths = {name: folder / name for name in ("base", "skilled", "target")}
    python, me = sys.executable, str(Path(__file__).resolve())
    if not all((p / "model.safetensors.index.json").is_file() for p in paths.values()):
        print(f"building three {shape.label} checkpoints ({shape.layers} layers) in {folder} ...", file=sys.stderr)
        for name, noise, shard in (("base", "-", 2_000_000_000), ("skilled", "2", 1_000_000_000),
                                   ("target", "3", 1_500_000_000)):
            measure([python, me, "--child", "build", str(paths[name]), size, name, "1", noise, str(shard)])
    base, skilled, target = (str(paths[n]) for n in ("base", "skilled", "target"))
    outputs = {name: folder / f"out-{name}" for name in ("floor", "one", "emb", "vec", "two", "mergekit", "seeds")}
    for path in outputs.values():
        shutil.rmtree(path, ignore_errors=True)
    sg = [python, "-m", "skillgraft.cli"]
    env = {**os.environ, "PYTHONPATH": str(Path(me).parents[1] / "src")}
    rows, notes = [], []

    def record(name: str, wall: float, rss: float) -> None:
        rows.append({"size": shape.label, "layers": shape.layers, "job": name, "wall_s": wall, "peak_rss_mb": rss})
        print(f"  {shape.label} {name:12s} {wall:8.1f} s {rss:9.0f} MB", file=sys.stderr)

    def floor(*extra: str) -> tuple[float, float]:
        result = measure([python, me, "--child", "floor", base, skilled, target, str(outputs["floor"]), *extra])
        shutil.rmtree(outputs["floor"], ignore_errors=True)
        return result

    floor()  # warm the page cache (as far as it holds the inputs)
    record("floor", *floor())
    record("floor+sha256", *floor("hash"))
    record("floor+torch+sha256", *floor("hash", "torch"))
    merged_agreement = {}
    if any(m != "sum" for m in methods):
        merged_agreement = run_methods([m for m in methods if m != "sum"], folder, paths, sg, env, mergekit_python,
                                       record, shape.whole_tensors_fit)
        if not shape.whole_tensors_fit:
            notes.append("mergekit's merge methods not run: they hold whole tensors (and its ties a full-size "
                         "top-k) of the 1.05G-entry embedding, more than this machine's memory")
    if "sum" not in methods:
        for row in rows:
            row["agreement"] = merged_agreement
        return rows
    record("sg-one-pass", *measure(sg + ["graft", target, "--delta", base, skilled, "-o", str(outputs["one"]),
                                         "--quiet"], env))
    one_pass = weight_hashes(outputs["one"])
    if not shape.whole_tensors_fit:  # no value-by-value checks: free the disk for the two-step vector
        shutil.rmtree(outputs["one"], ignore_errors=True)
    if shape.tokenizers:
        record("sg-with-embeddings", *measure(sg + ["graft", target, "--delta", base, skilled, "--with-embeddings",
                                                    "-o", str(outputs["emb"]), "--quiet"], env))
        shutil.rmtree(outputs["emb"], ignore_errors=True)
    wall_a, rss_a = measure(sg + ["extract", base, skilled, "-o", str(outputs["vec"]), "--quiet"], env)
    wall_b, rss_b = measure(sg + ["graft", target, str(outputs["vec"]), "-o", str(outputs["two"]), "--quiet"], env)
    shutil.rmtree(outputs["vec"], ignore_errors=True)
    record("sg-two-step", wall_a + wall_b, max(rss_a, rss_b))
    agreement = {"two-step weights identical to one-pass": weight_hashes(outputs["two"]) == one_pass}
    if mergekit_python and shape.whole_tensors_fit:
        config = mergekit_config(folder, paths["base"], paths["skilled"], paths["target"])
        mergekit = str(Path(mergekit_python).parent / "mergekit-yaml")
        record("mergekit", *measure([mergekit, str(config), str(outputs["mergekit"]), "--lazy-unpickle",
                                     "--out-shard-size", "5B"]))
    if not shape.whole_tensors_fit:
        notes.append("mergekit, seeds-loop and the value-by-value agreement checks not run: they hold whole "
                     "models, whole-tensor float64 copies, or (mergekit, which needs tokenizer: {source: TARGET} "
                     "for these vocabularies) more than this machine's memory; see docs/benchmarks.md")
        for row in rows:
            row["agreement"], row["notes"] = agreement, notes
        for path in outputs.values():
            shutil.rmtree(path, ignore_errors=True)
        return rows
    record("seeds-loop", *measure([python, me, "--child", "seeds-loop", base, skilled, target, str(outputs["seeds"])]))

    def agree(other: str) -> dict:
        report = folder / f"agree-{other}.json"
        measure([python, me, "--child", "compare", str(outputs["one"]), str(outputs[other]), str(report),
                 base, skilled, target])
        return json.loads(report.read_text())

    agreement.update({"vs two-step": agree("two"), "vs seeds-loop": agree("seeds")})
    if outputs["mergekit"].is_dir():
        agreement["vs mergekit"] = agree("mergekit")
    exact_report = folder / "exact.json"
    measure([python, me, "--child", "exact", str(exact_report), base, skilled, target,
             *(str(outputs[n]) for n in ("one", "seeds", "mergekit") if outputs[n].is_dir())])
    exact = json.loads(exact_report.read_text())
    agreement.update(merged_agreement)
    for row in rows:
        row["agreement"], row["notes"] = agreement, notes
        row["exact_max_steps"] = exact
    for path in outputs.values():
        shutil.rmtree(path, ignore_errors=True)
    return rows


def median_of(runs: list[list[dict]]) -> list[dict]:
    """One row per job from repeated runs: the median wall time (the upper one for an even
    count), the largest peak RSS, every run's wall time. At 70b-shape the page cache holds
    only part of the inputs, so single runs vary with what other jobs left in it."""
    rows = []
    for row in runs[0]:
        same = [next(r for r in run if r["job"] == row["job"]) for run in runs]
        walls = sorted(r["wall_s"] for r in same)
        rows.append({**same[-1], "wall_s": walls[len(walls) // 2],
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in same), "wall_runs": [r["wall_s"] for r in same]})
    return rows


def print_table(rows: list[dict]) -> None:
    by = {(r["size"], r["job"]): r for r in rows}
    print("| size | job | wall s | peak RSS MB | wall ÷ mergekit | wall ÷ floor | wall ÷ floor+torch+sha256 "
          "| RSS ÷ mergekit | wall ÷ sg-sum-2-deltas |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")

    def ratio(a: float, b: dict | None, key: str) -> str:
        return f"{a / b[key]:.2f}" if b and b[key] else "n/a"

    for r in rows:
        method = r["job"].split("-", 1)[1] if r["job"].split("-", 1)[-1] in ("ties", "dare_ties") else None
        mk = by.get((r["size"], f"mergekit-{method}" if method else "mergekit"))
        floor, full_floor = by.get((r["size"], "floor")), by.get((r["size"], "floor+torch+sha256"))
        summed = by.get((r["size"], "sg-sum-2-deltas")) if r["job"].startswith("sg-") else None
        print(f"| {r['size']} ({r['layers']} layers) | {r['job']} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | "
              f"{ratio(r['wall_s'], mk, 'wall_s')} | {ratio(r['wall_s'], floor, 'wall_s')} | "
              f"{ratio(r['wall_s'], full_floor, 'wall_s')} | {ratio(r['peak_rss_mb'], mk, 'peak_rss_mb')} | "
              f"{ratio(r['wall_s'], summed, 'wall_s')} |")
    seen = set()
    for r in rows:
        if r["size"] not in seen:
            seen.add(r["size"])
            print(f"\n{r['size']} output agreement (sg-one-pass unless named): " + "; ".join(
                f"{k}: {v}" if isinstance(v, bool) else
                f"{k}: max {v['max_steps']:.2f} bf16 steps, {v['differing_values']} values differ"
                for k, v in r["agreement"].items()))
            for note in r.get("notes", []):
                print(f"{r['size']}: {note}")
            if len(r["wall_runs"]) > 1:
                print(f"{r['size']} wall times of each run, s: " + "; ".join(
                    f"{x['job']} " + " / ".join(f"{w:.1f}" for w in x["wall_runs"]) for x in rows if x["size"] == r["size"]))
            if "exact_max_steps" in r:
                print(f"{r['size']} largest distance from the exact result (float64), in bf16 steps of the result or "
                      "of the operands' scale (0.5 = correctly rounded): " + "; ".join(
                          f"{k.replace('out-one', 'sg-one-pass').replace('out-seeds', 'seeds-loop').replace('out-mergekit', 'mergekit')}: "
                          f"{v:.2f}" for k, v in r["exact_max_steps"].items()))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        CHILDREN[sys.argv[2]](*sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.8,1.6",
                        help="model sizes in billions of parameters, or 70b-shape (two layers of Llama-3-70B's "
                             "tensors, the target with a 141,000-token vocabulary: ~31 GB of disk)")
    parser.add_argument("--methods", default="sum,ties,dare_ties",
                        help="sum (the task-arithmetic rows), ties, dare_ties: which comparisons to run")
    parser.add_argument("--work", default="/work/bench-work",
                        help="scratch folder (needs ~10 GB per 0.8B, ~45 GB for 70b-shape)")
    parser.add_argument("--mergekit-python", default="/work/bench-work/mergekit-venv/bin/python")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run every job of a size this many times, in turn; the table shows the median wall "
                             "time and the largest peak RSS, and lists each run's wall times")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    mergekit = args.mergekit_python if Path(args.mergekit_python).is_file() else None
    if mergekit is None:
        print(f"note: no mergekit at {args.mergekit_python}; its rows are left out", file=sys.stderr)
    rows = []
    for size in args.sizes.split(","):
        runs = [run_size(size.strip(), Path(args.work), mergekit, tuple(m.strip() for m in args.methods.split(",")))
                for _ in range(args.repeats)]
        rows += median_of(runs)
    print_table(rows)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
