#!/usr/bin/env bash
# Time mempo-eval on CPU: the tiny world's shipped SFT checkpoint on held-out `synthetic` worlds (k = 1, 2, 4
# objectives) under the three context policies (memory = MemPO, full = ReAct / Search-R1 history, mem1 = MEM1),
# 8 worlds per k. Prints the summary, the wall time of the whole run and the mean seconds per episode per method and k.
#
#   bash examples/eval/time_tiny_cpu.sh [model] [out_dir]      # model: default tiny:sft, any folder or tiny:random
#
# Greedy, one episode at a time and one torch thread, so the per-episode seconds are the episode's own. The SFT
# checkpoint learned the `memory` context only (mempo_verl/tiny/data.py): `full` and `mem1` show what the same model
# does with contexts it never saw.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL="${1:-tiny:sft}"
OUT="${2:-outputs/eval_tiny}"
PY="${PYTHON:-.venv/bin/python}"
DATA=$("$PY" -c "from mempo_verl.tiny.data import tiny_world_eval_sets; print(tiny_world_eval_sets())")
rm -rf "$OUT"
start=$(date +%s.%N)
"$PY" -m mempo_verl.eval.cli --model "$MODEL" --data "$DATA" --objectives 1,2,4 --max-examples 8 \
    --env synthetic --env-kwargs '{"prompt": "tiny"}' --set mempo.context.turns_left_hint=false \
    --max-turns 6 --turn-tokens 96 --prompt-length 512 --full-response-length 1024 --temperature 0 \
    --concurrency 1 --threads 1 --out "$OUT" --no-progress
end=$(date +%s.%N)
"$PY" -c "print(f'wall time of the whole run: {$end - $start:.1f} s')"
"$PY" - "$OUT" <<'PY'
import json, sys
from collections import defaultdict
seconds, turns = defaultdict(list), defaultdict(list)
for line in open(f"{sys.argv[1]}/traces.jsonl"):
    r = json.loads(line)
    seconds[(r["objectives"], r["method"])].append(r["seconds"])
    turns[(r["objectives"], r["method"])].append(len(r["turns"]))
print("| k | method | episodes | s / episode | s total | turns / episode |\n|---|---|---|---|---|---|")
for (k, m), s in sorted(seconds.items()):
    t = turns[(k, m)]
    print(f"| {k} | {m} | {len(s)} | {sum(s) / len(s):.2f} | {sum(s):.1f} | {sum(t) / len(t):.2f} |")
PY
