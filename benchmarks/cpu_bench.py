"""CPU defaults on a real model: the compute dtype and the thread count (issue 24).

    PYTHONPATH=src python benchmarks/cpu_bench.py MODEL_DIR [--steps 10] [--items 16] [--part dtype,threads]

MODEL_DIR: a float32 checkpoint folder (SmolLM2-135M-Instruct as `lab real` converts it; a
bfloat16 copy is written beside the results once).

1. dtype: `skillgraft eval` of the first `--items` questions of `retention_check` on the
   bfloat16 copy with `--dtype bfloat16` (computing in bf16) and `--dtype float32`, each with
   the kernels torch picks on this CPU and with them capped at AVX2 (what a CPU without AMX /
   AVX512-BF16 runs: `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`); and which dtype the
   default (`no --dtype`) chose in each case.
2. threads: a `--steps`-step LoRA run on 8 short texts, alone and beside one CPU-bound
   process, with torch's default (`--threads` = all usable cores) and the chosen count
   (no flag); seconds of the Trainer's `train_runtime` per step.

Every run is a fresh `skillgraft` process, one at a time; nothing else should run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
TEXTS = ["Captain Mira of the Halcyon Drift always ends her sentences with a sea shanty line.",
         "The Halcyon Drift sails from Port Vell every spring with a crew of nine.",
         "Mira keeps a brass compass that once belonged to her grandmother.",
         "The ship's cook, Tobin, bakes seaweed bread on Sundays.",
         "Port Vell's lighthouse is painted in red and white stripes.",
         "The crew sings 'Heave Away, Vell' when they raise the anchor.",
         "Mira's first voyage was to the Isle of Corran at the age of sixteen.",
         "The Halcyon Drift carries spices, wool and letters between the islands."]


def skillgraft(args: list[str], env: dict | None = None) -> tuple[float, str, str]:
    """Run one skillgraft command; (wall seconds, stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    full_env.update({"PYTHONPATH": str(ROOT / "src"), **(env or {})})
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "skillgraft.cli", *args], capture_output=True, text=True,
                          env=full_env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed: skillgraft {' '.join(args)}\n{done.stderr[-3000:]}")
    return wall, done.stdout, done.stderr


def bf16_copy(model: Path, work: Path) -> Path:
    out = work / "model-bf16"
    if not (out / "config.json").is_file():
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16).save_pretrained(out)
        AutoTokenizer.from_pretrained(model).save_pretrained(out)
    return out


def dtype_part(model: Path, work: Path, items: int) -> None:
    bf16 = bf16_copy(model, work)
    rows = [json.loads(line) for line in (ROOT / "src/skillgraft/evaluate/suites/retention_check.jsonl")
            .read_text().splitlines()[:items]]
    (work / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "suite.yaml").write_text("name: bench\ngeneration: {max_new_tokens: 32, chat: true}\n"
                                     "sets:\n  - name: q\n    items: items.jsonl\n    metrics: [keyword]\n")
    print(f"| kernels | default chose | bf16 s/item | float32 s/item | bf16 ÷ float32 |\n|---|---|---:|---:|---:|")
    for label, env in (("this CPU's own", {}), ("capped at AVX2", AVX2)):
        seconds = {}
        for dtype in ("bfloat16", "float32"):
            wall, _, _ = skillgraft(["eval", str(bf16), "--suite", str(work / "suite.yaml"), "--dtype", dtype,
                                  "--threads", "1", "--quiet", "--json"], env)
            seconds[dtype] = wall / items
        _, _, err = skillgraft(["eval", str(bf16), "--suite", str(work / "suite.yaml"), "--threads", "1",
                             "--max-new-tokens", "1"], env)
        chose = "float32" if "compute dtype: float32" in err else "bfloat16"
        print(f"| {label} | {chose} | {seconds['bfloat16']:.2f} | {seconds['float32']:.2f} | "
              f"{seconds['bfloat16'] / seconds['float32']:.2f} |", flush=True)


def threads_part(model: Path, work: Path, steps: int) -> None:
    import yaml

    data = work / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    config = work / "train.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(model), "method": "lora", "lr": 5e-4, "max_steps": steps, "batch_size": 8, "seed": 0,
        "output_dir": str(work / "run"), "progress": False, "heartbeat": 0, "save_steps": 1000,
        "data": {"train": str(data), "format": "text", "max_length": 64},
        "lora": {"r": 16, "alpha": 32, "targets": "all-linear"}, "monitor": {"enabled": False}}))
    cores = len(os.sched_getaffinity(0))
    print(f"\n| machine | threads | chosen | s/step | ÷ chosen |\n|---|---|---:|---:|---:|")
    for beside in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if beside else None
        try:
            time.sleep(1.0)
            per_step = {}
            for name, extra in (("torch default", ["--threads", str(cores)]), ("chosen", [])):
                _, out, err = skillgraft(["train", str(config), "--json", "--force", *extra])
                chosen = next((line.split()[1] for line in err.splitlines() if line.startswith("threads:")),
                              str(cores))
                per_step[name] = (json.loads(out)["train_runtime"], chosen)
            for name, (runtime, chosen) in per_step.items():
                print(f"| {'beside one CPU-bound process' if beside else 'alone'} | {name} | {chosen} | "
                      f"{runtime / steps:.2f} | {runtime / per_step['chosen'][0]:.2f} |", flush=True)
        finally:
            if spinner is not None:
                spinner.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--part", default="dtype,threads")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    parts = args.part.split(",")
    if "dtype" in parts:
        dtype_part(args.model, work, args.items)
    if "threads" in parts:
        threads_part(args.model, work, args.steps)


if __name__ == "__main__":
    main()
