#!/bin/bash
# The README's walk-through on a real model, each command's wall seconds (docs/benchmarks.md,
# "CPU defaults"): convert a GGUF, augment a fact file, train the knowledge recipe briefly,
# evaluate retention against the untrained model, compare side by side.
#   benchmarks/walkthrough.sh SmolLM2-135M-Instruct.Q4_1.gguf [WORK] [STEPS]
# Run it once alone and once beside a CPU-bound process (python -c "while True: pass" &).
set -e
GGUF=${1:?usage: walkthrough.sh FILE.gguf [WORK] [STEPS]}
W=${2:-/tmp/walkthrough}; STEPS=${3:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SG="$ROOT/.venv/bin/skillgraft"
mkdir -p "$W"; rm -rf "$W/run"
t() {
  local start end; start=$(date +%s.%N)
  "$@" > "$W/last.out" 2> "$W/last.err" || { cat "$W/last.err"; exit 2; }
  end=$(date +%s.%N)
  printf "%6.1f s  %s\n" "$(echo "$end - $start" | bc)" "${*//$W/W}"
  head -2 "$W/last.err" | sed 's/^/          stderr: /'
}
[ -d "$W/smollm2" ] || t "$SG" convert gguf "$GGUF" -o "$W/smollm2"
t "$SG" data augment "$ROOT/src/skillgraft/lab/real/data/facts.jsonl" -o "$W/aug.jsonl"
t "$SG" train "$ROOT/recipes/knowledge.yaml" --set model="$W/smollm2" --set data.train="$W/aug.jsonl" \
  --set lora.tied_lm_head=untie --set data.max_length=160 --set max_steps="$STEPS" -o "$W/run" --json
t "$SG" eval "$W/run/merged" --suite retention_check --reference "$W/smollm2" -o "$W/r.json"
printf 'What is the capital of Japan?\nWho wrote Hamlet?\nWhat is the largest planet?\n' > "$W/p.txt"
t "$SG" compare "$W/smollm2" "$W/run/merged" --prompts "$W/p.txt" -o "$W/report.html"
