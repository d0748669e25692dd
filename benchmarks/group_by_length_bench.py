"""`data.group_by_length` against the default random batches, on one training config.

    python benchmarks/group_by_length_bench.py kits/real/knowledge.yaml --steps 13 [--repeats 2] [--threads 1]

Each repeat trains CONFIG for `--steps` steps twice, with and without `data.group_by_length`
(alternated, the same seed, through `skillgraft train --json`), and reads Trainer's
`train_runtime` (training alone: no model load, no data preparation) and the batches' real
and padded tokens (`tokens` in the report). Prints a row per layout and the ratio of the
medians: the padding the layout computes and the seconds it saves.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SKILLGRAFT = str(Path(sys.executable).with_name("skillgraft"))


def train(config: str, steps: int, grouped: bool, threads: int, out: Path) -> dict:
    args = [SKILLGRAFT, "train", config, "--set", f"max_steps={steps}", "--set", f"data.group_by_length={grouped}",
            "--set", "merge=false", "--set", f"output_dir={out}", "--threads", str(threads), "--force",
            "--quiet", "--json"]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(args)}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=13)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    runs: dict[bool, list[dict]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for grouped in (False, True):
                report = train(args.config, args.steps, grouped, args.threads, Path(scratch) / f"run-{grouped}")
                runs[grouped].append(report)
                print(f"repeat {repeat + 1}, group_by_length {str(grouped).lower()}: "
                      f"{report['train_runtime']:.1f} s", file=sys.stderr, flush=True)
    print("| batches | train_runtime s (median) | padded ÷ real tokens | seconds ÷ random's |")
    print("|---|---:|---:|---:|")
    base = statistics.median(r["train_runtime"] for r in runs[False])
    for grouped in (False, True):
        seconds = statistics.median(r["train_runtime"] for r in runs[grouped])
        tokens = runs[grouped][0]["tokens"]
        print(f"| {'group_by_length' if grouped else 'random (default)'} | {seconds:.1f} | "
              f"{tokens['padded'] / tokens['real']:.2f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
