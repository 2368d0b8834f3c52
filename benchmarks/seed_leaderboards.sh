#!/usr/bin/env bash
# The runs behind the seeded leaderboard tracks: small protocols that fit a shared 2-core CPU
# (first 20 test samples, certification with n = 10,000 at alpha 0.001, seed 0; on smoothing the
# judge's N = 1500 at alpha 0.005 and confirmation on 15,000 fresh copies). About three hours on
# 2 busy CPU cores, most of it the evasion runs on smoothing and the spoofing runs on KW.
# Usage: benchmarks/seed_leaderboards.sh [RUNS_DIR]
set -euo pipefail
export OMP_NUM_THREADS=1
runs=${1:-runs/leaderboards}
ev() { nice -n 10 rsbench evaluate --num-samples 20 --n 10000 --seed 0 --save-examples "$@"; }
ev --defense smoothing-digits-0.50 --attack caa --attack pgd --attack deepfool --attack caa-direct \
   --judge-n 1500 --confirm-n 15000 --out "$runs/evasion-smoothing-digits-0.50"
for defense in smoothing-digits-1.00 macer-digits-0.25; do
  ev --defense $defense --attack caa --attack pgd --attack deepfool --attack caa-direct \
     --judge-n 1500 --confirm-n 15000 --out "$runs/evasion-$defense"
done
ev --defense gloro-digits-0.25 --attack pgd-l2 --out "$runs/evasion-gloro-digits-0.25"
ev --defense kw-digits-0.05 --attack pgd-linf --out "$runs/evasion-kw-digits-0.05"
ev --defense gloro-digits-0.25 --attack degradation-pgd --attack degradation-eps-pgd --attack degradation-adaptive \
   --out "$runs/degradation-gloro-digits-0.25"
ev --defense kw-digits-0.05 --attack degradation-pgd-linf --attack degradation-eps-pgd-linf \
   --attack degradation-adaptive-linf --out "$runs/degradation-kw-digits-0.05"
ev --defense smoothing-digits-0.25 --attack degradation-spgd --attack degradation-adaptive \
   --out "$runs/degradation-smoothing-digits-0.25"
ev --defense gloro-digits-0.25 --attack shadow-1ch --out "$runs/spoofing-gloro-digits-0.25"
ev --defense gloro-digits-0.50 --attack pgd-l2 --out "$runs/evasion-gloro-digits-0.50"
ev --defense gloro-digits-0.50 --attack degradation-pgd --attack degradation-eps-pgd --attack degradation-adaptive \
   --out "$runs/degradation-gloro-digits-0.50"
ev --defense gloro-digits-0.50 --attack shadow-1ch --out "$runs/spoofing-gloro-digits-0.50"
ev --defense kw-digits-0.05 --attack shadow-1ch --out "$runs/spoofing-kw-digits-0.05"
ev --defense kw-digits-0.10 --attack pgd-linf --out "$runs/evasion-kw-digits-0.10"
ev --defense kw-digits-0.10 --attack degradation-pgd-linf --attack degradation-eps-pgd-linf \
   --attack degradation-adaptive-linf --out "$runs/degradation-kw-digits-0.10"
ev --defense kw-digits-0.10 --attack shadow-1ch --out "$runs/spoofing-kw-digits-0.10"
for run in "$runs"/*/; do rsbench leaderboard add "$run"; done
rsbench submission validate submissions/fmn-smoothed
rsbench submission verify submissions/fmn-smoothed
rsbench leaderboard render
