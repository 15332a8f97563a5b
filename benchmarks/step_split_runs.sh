#!/usr/bin/env bash
# The runs behind BENCHMARKS.md §3 (step split): the same tiny-world prompts, data order, rollout seed and rollout
# count (8 prompts x 4 sessions a step) under four trainers, one after another, then their warm-step table:
#   alpha0        MemPO's trainer with mempo.credit.alpha=0 (GRPO in memory format: no memory credit is scored)
#   mempo         MemPO, the default scorer (rollout: scored by vLLM at session end, inside `gen`)
#   mempo_actor   MemPO, scorer actor (scored by the FSDP actor inside the step, `memory credit`)
#   grpo          verl's own sync trainer and GRPO estimator (algorithm.adv_estimator=grpo,
#                 trainer.v1.trainer_mode=sync) over the same agent loop's segments, alpha 0 (nothing scored)
#
#   bash benchmarks/step_split_runs.sh [OUT] [OBJECTIVES]     # OUT default runs/step_split, OBJECTIVES default 0
#
# OBJECTIVES 0 uses the recipe's own data (k = 1-2, 2-3 turns); OBJECTIVES k > 0 writes synthetic worlds of k
# one-hop questions in the tiny world's style (k + 1 turns for an optimal agent) with max_turns k + 3, for longer
# sessions. Each run is `python -m mempo_verl.main` (recipe tiny_cpu, the shipped SFT checkpoint or MODEL), STEPS steps,
# no validation and no checkpoint; a run whose metrics.jsonl already holds STEPS steps is kept. RUNS picks the runs
# (default: all four); EXTRA adds space-separated overrides to every run.
set -euo pipefail
out=${1:-runs/step_split}
objectives=${2:-0}
steps=${STEPS:-6}
python=${PYTHON:-python}
mkdir -p "$out"

common=(
  "trainer.total_training_steps=$steps" "trainer.val_before_train=false" "trainer.test_freq=1000"
  "trainer.save_freq=1000" "data.shuffle=false" "data.seed=0" "actor_rollout_ref.rollout.seed=0"
)
if [ -n "${MODEL:-}" ]; then
  common+=("actor_rollout_ref.model.path=$MODEL")
fi
# shellcheck disable=SC2206  # EXTRA is space-separated overrides
common+=(${EXTRA:-})
if [ "$objectives" != 0 ]; then
  "$python" -m mempo_verl.data.cli synthetic --out "$out/data" --objectives "$objectives" --hops 1 \
    --names pool --prompt tiny --train-rows 256 --test-rows 8
  common+=("data.train_files=$out/data/train.parquet" "data.val_files=$out/data/test.parquet"
           "mempo.agent.max_turns=$((objectives + 3))")
fi

run() {
  local name=$1
  shift
  local dir="$out/$name"
  if [ -f "$dir/metrics.jsonl" ] && "$python" -c "import sys; from mempo_verl.run_summary import read_metrics
sys.exit($steps not in read_metrics('$dir/metrics.jsonl'))"; then
    echo "[$(date +%T)] $name: done before"
    return
  fi
  mkdir -p "$dir"
  rm -f "$dir/metrics.jsonl"
  echo "[$(date +%T)] $name: $*"
  VERL_FILE_LOGGER_PATH="$dir/metrics.jsonl" "$python" -m mempo_verl.main \
    "trainer.default_local_dir=$dir" "trainer.experiment_name=step_split_$name" "${common[@]}" "$@" \
    > "$dir/console.log" 2>&1
}

declare -A overrides=(
  [alpha0]="mempo.credit.alpha=0"
  [mempo]=""
  [mempo_actor]="mempo.credit.scorer=actor"
  [grpo]="algorithm.adv_estimator=grpo trainer.v1.trainer_mode=sync mempo.credit.alpha=0"
)
runs=(${RUNS:-alpha0 mempo mempo_actor grpo})
for name in "${runs[@]}"; do
  # shellcheck disable=SC2086  # the overrides are space-separated words
  run "$name" ${overrides[$name]}
done
"$python" -m benchmarks.bench_step_split $(for name in "${runs[@]}"; do printf '%s=%s ' "$name" "$out/$name"; done)
