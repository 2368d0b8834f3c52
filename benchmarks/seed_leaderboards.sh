#!/usr/bin/env bash
# The runs behind the seeded leaderboard tracks: small protocols that fit a shared 2-core CPU
# (first 20 test samples, certification with n = 10,000 at alpha 0.001, seed 0; on smoothing the
# judge's N = 1500 at alpha 0.005 and confirmation on 15,000 fresh copies). About three hours on
# 2 busy CPU cores, most of it the evasion runs on smoothing and the spoofing runs on KW.
# Usage: [RSBENCH_DATA=DIR] benchmarks/seed_leaderboards.sh [RUNS_DIR]  (DIR with mnist/ adds kw-mnist-0.1)
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
# (not smoothing-digits-1.00: no digit is certified at epsilon = sigma = 1, so its degradation track is empty)
for defense in smoothing-digits-0.50 macer-digits-0.25 macer-digits-0.50; do
  ev --defense $defense --attack degradation-spgd --attack degradation-adaptive --attack degradation-pgd \
     --out "$runs/degradation-$defense"
done
ev --defense smoothing-digits-0.25 --attack degradation-pgd --out "$runs/degradation-smoothing-digits-0.25-pgd"
for defense in smoothing-digits-0.25 smoothing-digits-0.50; do
  ev --defense $defense --attack shadow-1ch --out "$runs/spoofing-$defense"
done
if [ -d "${RSBENCH_DATA:-}/mnist" ]; then  # the released KW MNIST model and the MNIST test set
  ev --defense kw-mnist-0.1 --attack pgd-linf --out "$runs/evasion-kw-mnist-0.1"
  ev --defense kw-mnist-0.1 --attack degradation-pgd --attack degradation-eps-pgd --attack degradation-adaptive \
     --out "$runs/degradation-kw-mnist-0.1"
fi
ev --defense smoothing-rgbdigits-0.25 --attack shadow --attack shadow-1ch --out "$runs/spoofing-smoothing-rgbdigits-0.25"
# C-W (about 2 minutes a sample on one thread) and AutoAttack (about 11): on the CPU only where they fit.
ev --defense smoothing-digits-1.00 --attack cw --attack autoattack --judge-n 1500 --confirm-n 15000 \
   --out "$runs/evasion-smoothing-digits-1.00-baselines"
for defense in smoothing-digits-0.50 macer-digits-0.25; do
  ev --defense $defense --attack cw --judge-n 1500 --confirm-n 15000 --out "$runs/evasion-$defense-cw"
done
for run in "$runs"/*/; do rsbench leaderboard add "$run"; done
rsbench submission validate submissions/fmn-smoothed
rsbench submission verify submissions/fmn-smoothed
rsbench leaderboard render
