#!/usr/bin/env bash
# The certification-aware-attack paper's MNIST rows that rsbench's 2 CPU cores cannot run (the README's table of
# paper rows gives their CPU cost): C-W and AutoAttack on the smoothing MNIST tracks' protocol (first 100 test-eval
# images, n = 10,000, judge N = 1500 at alpha 0.005, confirmation on 15,000 copies, seed 0), each sweep resumable and
# time-limited, then every finished run folder offered to its track with `rsbench leaderboard add` (which refuses a
# run whose protocol differs). Needs the MNIST test set ($RSBENCH_DATA/mnist). Run it on a GPU machine after
# benchmarks/gpu_speed.sh; whatever a limit cuts short resumes on the next call.
# Usage: benchmarks/gpu_mnist_rows.sh [RUNS_DIR] [SECONDS_PER_SWEEP]
set -uo pipefail
runs=${1:-runs/mnist-slow}
limit=${2:-240}
nvidia-smi --query-gpu=name,memory.total --format=csv
for attack in cw autoattack; do
  timeout "$limit" rsbench sweep --defense 'smoothing-mnist-*' --attack "$attack" --num-samples 100 --n 10000 \
    --judge-n 1500 --confirm-n 15000 --seed 0 --save-examples --device cuda --root "$runs" \
    || echo "sweep of $attack stopped (limit ${limit}s or an error): run the script again to resume"
done
for config in "$runs"/*/*/config.json; do
  run=$(dirname "$config")
  [ -f "$run/result.json" ] && rsbench leaderboard add "$run"
done
rsbench leaderboard render
