"""Graft benchmark: skillgraft vs mergekit vs the seeds' in-memory loop vs an I/O floor.

Builds three synthetic Llama-layout checkpoints (bf16, sharded, different shard boundaries
per input) per size, then times on the same inputs, in one run, each in its own process so
peak resident memory (ru_maxrss from wait4) is that job's alone:

  floor          plain reads of the three inputs + one write of an output of the same size
                 (+sha256: hashing the output as a manifest needs; +torch: after `import torch`,
                 which every other job pays at start-up)
  sg-one-pass    skillgraft graft TARGET --delta BASE SKILLED
  sg-two-step    skillgraft extract BASE SKILLED, then graft TARGET VECTOR
  mergekit       task_arithmetic (base=BASE; SKILLED weight 1 with embed/lm_head 0; TARGET 1)
  seeds-loop     three AutoModelForCausalLM loads, state_dict loop, save_pretrained
  sg-ties        skillgraft graft BASE --delta BASE SKILLED --delta BASE TARGET --method ties
                 --density 0.5 --with-embeddings (both deltas merged onto the base, every tensor)
  mergekit-ties  mergekit ties, base_model=BASE, SKILLED and TARGET with weight 1, density 0.5
  sg-dare_ties / mergekit-dare_ties   the same with dare_ties (random masks: no agreement check)

Usage: python benchmarks/graft_bench.py [--sizes 0.8,1.6] [--methods sum,ties,dare_ties] [--work DIR]
                                        [--mergekit-python PATH]
mergekit runs from its own virtualenv (default /work/bench-work/mergekit-venv): make it with
`python3 -m venv V && V/bin/pip install -c constraints.txt mergekit`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HIDDEN, INTERMEDIATE, VOCAB, HEADS = 2048, 5632, 32000, 16
PER_LAYER = 4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTERMEDIATE + 2 * HIDDEN
EMBED = 2 * VOCAB * HIDDEN + HIDDEN


def layers_for(billions: float) -> int:
    return max(1, round((billions * 1e9 - EMBED) / PER_LAYER))


def tensor_shapes(layers: int) -> list[tuple[str, tuple[int, ...]]]:
    shapes = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (HIDDEN,)), (p + "post_attention_layernorm.weight", (HIDDEN,))]
        shapes += [(p + f"self_attn.{n}_proj.weight", (HIDDEN, HIDDEN)) for n in "qkvo"]
        shapes += [(p + "mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)), (p + "mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
                   (p + "mlp.down_proj.weight", (HIDDEN, INTERMEDIATE))]
    return shapes + [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]


def write_checkpoint(folder: Path, layers: int, seed: int, noise_seed: int | None, shard_bytes: int) -> None:
    """Base weights from `seed`; skilled/target = base + 0.01·noise from `noise_seed`."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
              "intermediate_size": INTERMEDIATE, "num_hidden_layers": layers, "num_attention_heads": HEADS,
              "num_key_value_heads": HEADS, "vocab_size": VOCAB, "max_position_embeddings": 2048,
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shards, current, size = [], {}, 0
    names = []
    for index, (name, shape) in enumerate(tensor_shapes(layers)):
        gen = torch.Generator().manual_seed(seed * 100003 + index)
        tensor = torch.randn(shape, generator=gen) * 0.02
        if noise_seed is not None:
            noise = torch.Generator().manual_seed(noise_seed * 100003 + index)
            tensor += torch.randn(shape, generator=noise) * 0.002
        tensor = tensor.to(torch.bfloat16)
        if current and size + tensor.numel() * 2 > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensor
        names.append(name)
        size += tensor.numel() * 2
        if size >= shard_bytes:
            shards.append(current)
            current, size = {}, 0
    if current:
        shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, folder / file, metadata={"format": "pt"})
        weight_map.update({n: file for n in shard})
    total = sum(t.numel() * 2 for s in shards for t in s.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}))


# -- child jobs (each runs in its own process) ------------------------------------------------
def child_floor(base: str, skilled: str, target: str, out: str, hash_output: str = "", import_torch: str = "") -> None:
    """Read every input byte once, write an output of the target's size: the I/O floor.
    With `hash_output`, also sha256 the bytes written (what a manifest costs on top); with
    `import_torch`, first import torch, the start-up cost every torch-based job pays."""
    import hashlib

    if import_torch:
        import torch  # noqa: F401

    chunk = bytearray(64 << 20)
    view = memoryview(chunk)
    for folder in (base, skilled, target):
        for file in sorted(Path(folder).glob("*.safetensors")):
            with open(file, "rb", buffering=0) as handle:
                while handle.readinto(view):
                    pass
    Path(out).mkdir(parents=True, exist_ok=True)
    for file in sorted(Path(target).glob("*.safetensors")):
        remaining = file.stat().st_size
        digest = hashlib.sha256()
        with open(file, "rb", buffering=0) as src, open(Path(out) / file.name, "wb", buffering=0) as dst:
            while remaining > 0:
                count = src.readinto(view)
                dst.write(view[:count])
                if hash_output:
                    digest.update(view[:count])
                remaining -= count


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


def child_build(folder: str, layers: str, seed: str, noise_seed: str, shard_bytes: str) -> None:
    write_checkpoint(Path(folder), int(layers), int(seed), None if noise_seed == "-" else int(noise_seed),
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
                record, density: float = 0.5) -> dict:
    """The sg-METHOD and mergekit-METHOD rows; returns ties' output agreement (if both ran)."""
    base, skilled, target = (str(paths[n]) for n in ("base", "skilled", "target"))
    agreement = {}
    for method in methods:
        ours, theirs = folder / f"out-sg-{method}", folder / f"out-mk-{method}"
        for path in (ours, theirs):
            shutil.rmtree(path, ignore_errors=True)
        record(f"sg-{method}", *measure(sg + ["graft", base, "--delta", base, skilled, "--delta", base, target,
                                              "--method", method, "--density", str(density), "--with-embeddings",
                                              "-o", str(ours), "--quiet"], env))
        if mergekit_python:
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


def run_size(billions: float, work: Path, mergekit_python: str | None,
             methods: tuple[str, ...] = ("sum", "ties", "dare_ties")) -> list[dict]:
    layers = layers_for(billions)
    folder = work / f"{billions:g}B"
    paths = {name: folder / name for name in ("base", "skilled", "target")}
    if not all((p / "model.safetensors.index.json").is_file() for p in paths.values()):
        print(f"building three {billions:g}B checkpoints ({layers} layers) in {folder} ...", file=sys.stderr)
        me = str(Path(__file__).resolve())
        for name, noise, shard in (("base", "-", 2_000_000_000), ("skilled", "2", 1_000_000_000),
                                   ("target", "3", 1_500_000_000)):
            measure([sys.executable, me, "--child", "build", str(paths[name]), str(layers), "1", noise, str(shard)])
    base, skilled, target = (str(paths[n]) for n in ("base", "skilled", "target"))
    outputs = {name: folder / f"out-{name}" for name in ("floor", "one", "vec", "two", "mergekit", "seeds")}
    for path in outputs.values():
        shutil.rmtree(path, ignore_errors=True)
    python, me = sys.executable, str(Path(__file__).resolve())
    sg = [python, "-m", "skillgraft.cli"]
    env = {**os.environ, "PYTHONPATH": str(Path(me).parents[1] / "src")}
    rows = []

    def record(name: str, wall: float, rss: float) -> None:
        rows.append({"size": f"{billions:g}B", "layers": layers, "job": name, "wall_s": wall, "peak_rss_mb": rss})
        print(f"  {billions:g}B {name:12s} {wall:8.1f} s {rss:9.0f} MB", file=sys.stderr)

    measure([python, me, "--child", "floor", base, skilled, target, str(outputs["floor"])])  # warm the page cache
    record("floor", *measure([python, me, "--child", "floor", base, skilled, target, str(outputs["floor"])]))
    shutil.rmtree(outputs["floor"], ignore_errors=True)
    record("floor+sha256", *measure([python, me, "--child", "floor", base, skilled, target, str(outputs["floor"]),
                                     "hash"]))
    shutil.rmtree(outputs["floor"], ignore_errors=True)
    record("floor+torch+sha256", *measure([python, me, "--child", "floor", base, skilled, target,
                                           str(outputs["floor"]), "hash", "torch"]))
    merged_agreement = run_methods([m for m in methods if m != "sum"], folder, paths, sg, env, mergekit_python,
                                   record)
    if "sum" not in methods:
        for row in rows:
            row["agreement"] = merged_agreement
        shutil.rmtree(outputs["floor"], ignore_errors=True)
        return rows
    record("sg-one-pass", *measure(sg + ["graft", target, "--delta", base, skilled, "-o", str(outputs["one"]),
                                         "--quiet"], env))
    wall_a, rss_a = measure(sg + ["extract", base, skilled, "-o", str(outputs["vec"]), "--quiet"], env)
    wall_b, rss_b = measure(sg + ["graft", target, str(outputs["vec"]), "-o", str(outputs["two"]), "--quiet"], env)
    record("sg-two-step", wall_a + wall_b, max(rss_a, rss_b))
    if mergekit_python:
        config = mergekit_config(folder, paths["base"], paths["skilled"], paths["target"])
        mergekit = str(Path(mergekit_python).parent / "mergekit-yaml")
        record("mergekit", *measure([mergekit, str(config), str(outputs["mergekit"]), "--lazy-unpickle",
                                     "--out-shard-size", "5B"]))
    record("seeds-loop", *measure([python, me, "--child", "seeds-loop", base, skilled, target, str(outputs["seeds"])]))
    def agree(other: str) -> dict:
        report = folder / f"agree-{other}.json"
        measure([python, me, "--child", "compare", str(outputs["one"]), str(outputs[other]), str(report),
                 base, skilled, target])
        return json.loads(report.read_text())

    agreement = {"vs two-step": agree("two"), "vs seeds-loop": agree("seeds")}
    if mergekit_python:
        agreement["vs mergekit"] = agree("mergekit")
    exact_report = folder / "exact.json"
    measure([python, me, "--child", "exact", str(exact_report), base, skilled, target,
             *(str(outputs[n]) for n in ("one", "seeds", "mergekit") if outputs[n].is_dir())])
    exact = json.loads(exact_report.read_text())
    agreement.update(merged_agreement)
    for row in rows:
        row["agreement"] = agreement
        row["exact_max_steps"] = exact
    for path in outputs.values():
        shutil.rmtree(path, ignore_errors=True)
    return rows


def print_table(rows: list[dict]) -> None:
    by = {(r["size"], r["job"]): r for r in rows}
    print("| size | job | wall s | peak RSS MB | wall ÷ mergekit | wall ÷ floor | wall ÷ floor+torch+sha256 "
          "| RSS ÷ mergekit |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")

    def ratio(a: float, b: dict | None, key: str) -> str:
        return f"{a / b[key]:.2f}" if b and b[key] else "n/a"

    for r in rows:
        method = r["job"].split("-", 1)[1] if r["job"].split("-", 1)[-1] in ("ties", "dare_ties") else None
        mk = by.get((r["size"], f"mergekit-{method}" if method else "mergekit"))
        floor, full_floor = by.get((r["size"], "floor")), by.get((r["size"], "floor+torch+sha256"))
        print(f"| {r['size']} ({r['layers']} layers) | {r['job']} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | "
              f"{ratio(r['wall_s'], mk, 'wall_s')} | {ratio(r['wall_s'], floor, 'wall_s')} | "
              f"{ratio(r['wall_s'], full_floor, 'wall_s')} | {ratio(r['peak_rss_mb'], mk, 'peak_rss_mb')} |")
    seen = set()
    for r in rows:
        if r["size"] not in seen:
            seen.add(r["size"])
            print(f"\n{r['size']} output agreement (sg-one-pass unless named): " + "; ".join(
                f"{k}: max {v['max_steps']:.2f} bf16 steps, {v['differing_values']} values differ"
                for k, v in r["agreement"].items()))
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
    parser.add_argument("--sizes", default="0.8,1.6", help="model sizes in billions of parameters")
    parser.add_argument("--methods", default="sum,ties,dare_ties",
                        help="sum (the task-arithmetic rows), ties, dare_ties: which comparisons to run")
    parser.add_argument("--work", default="/work/bench-work", help="scratch folder (needs ~10 GB per 0.8B)")
    parser.add_argument("--mergekit-python", default="/work/bench-work/mergekit-venv/bin/python")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    mergekit = args.mergekit_python if Path(args.mergekit_python).is_file() else None
    if mergekit is None:
        print(f"note: no mergekit at {args.mergekit_python}; its rows are left out", file=sys.stderr)
    rows = []
    for size in (float(s) for s in args.sizes.split(",")):
        rows += run_size(size, Path(args.work), mergekit, tuple(m.strip() for m in args.methods.split(",")))
    print_table(rows)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
