#!/usr/bin/env bash
# A tiny-world checkpoint that acts for ~7-8 turns, for timing training steps at long horizons (BENCHMARKS.md §3):
# the shipped SFT checkpoint (k = 1-2) fine-tuned by verl's SFT trainer on the synthetic oracle's episodes with
# k = 5-8 one-hop questions. It is a benchmark fixture, not a better agent: greedy on k = 7 worlds it takes ~7 turns
# but answers nothing right (measured 2026-12-07: 7.2 turns, EM 0, 58 % of episodes end on a turn cut at 96 tokens).
#
#   bash benchmarks/long_horizon_sft.sh [OUT]          # OUT default runs/long_horizon_sft; ~15-40 min on 2 cores
#   MODEL=OUT/ckpt/global_step_150/huggingface RUNS="alpha0 mempo mempo_actor" \
#     EXTRA="data.max_response_length=192" bash benchmarks/step_split_runs.sh runs/step_split_k7_long 7
set -euo pipefail
out=${1:-runs/long_horizon_sft}
python=${PYTHON:-python}
shipped=$("$python" -c "from mempo_verl.tiny import data; print(data.SHIPPED_SFT_DIR)")
mkdir -p "$out"
"$python" -m mempo_verl.data.cli sft --source oracle --episodes 700 --objectives 5,6,7,8 --names pool --prompt tiny \
  --max-turns 11 --seed 7 --set mempo.context.turns_left_hint=false --out "$out/sft.parquet"
"$python" -m mempo_verl.sft --config-name sft_tiny "model.path=$shipped" "data.train_files=$out/sft.parquet" \
  trainer.total_training_steps=150 optim.lr=1e-3 optim.lr_warmup_steps=10 trainer.save_freq=150 \
  "trainer.default_local_dir=$out/ckpt" "hydra.run.dir=$out/hydra"
