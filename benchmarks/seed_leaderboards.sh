#!/usr/bin/env bash
# The runs behind the seeded leaderboard tracks: small protocols that fit a shared 2-core CPU
# (first 20 test samples, certification with n = 10,000 at alpha 0.001, seed 0; on smoothing the
# judge's N = 1500 at alpha 0.005 and confirmation on 15,000 fresh copies). About ten hours on one
# CPU thread: most of it C-W and AutoAttack on smoothing (minutes a sample each) and Shadow spoofing.
# Usage: [RSBENCH_DATA=DIR] benchmarks/seed_leaderboards.sh [RUNS_DIR]  (DIR with mnist/ adds kw-mnist-0.1)
set -euo pipefail
export OMP_NUM_THREADS=1
runs=${1:-runs/leaderboards}
ev() { nice -n 10 rsbench evaluate --num-samples 20 --n 10000 --seed 0 --save-examples "$@"; }
judge=(--judge-n 1500 --confirm-n 15000)

# Evasion. C-W (about 2 minutes a sample on one thread) and AutoAttack (about 11) only where they fit.
for defense in smoothing-digits-0.25 smoothing-digits-0.50 smoothing-digits-1.00 macer-digits-0.25 macer-digits-0.50; do
  ev --defense $defense --attack caa --attack pgd --attack deepfool --attack caa-direct "${judge[@]}" \
     --out "$runs/evasion-$defense"
done
ev --defense smoothing-digits-1.00 --attack cw --attack autoattack "${judge[@]}" --out "$runs/evasion-smoothing-digits-1.00-baselines"
for defense in smoothing-digits-0.50 macer-digits-0.25; do
  ev --defense $defense --attack cw "${judge[@]}" --out "$runs/evasion-$defense-cw"
done
for defense in gloro-digits-0.25 gloro-digits-0.50; do ev --defense $defense --attack pgd-l2 --out "$runs/evasion-$defense"; done
for defense in kw-digits-0.05 kw-digits-0.10; do ev --defense $defense --attack pgd-linf --out "$runs/evasion-$defense"; done

# Degradation (not smoothing-digits-1.00: no digit is certified at epsilon = sigma = 1, so the track would be empty).
for defense in gloro-digits-0.25 gloro-digits-0.50; do
  ev --defense $defense --attack degradation-pgd --attack degradation-eps-pgd --attack degradation-adaptive \
     --out "$runs/degradation-$defense"
done
for defense in kw-digits-0.05 kw-digits-0.10; do
  ev --defense $defense --attack degradation-pgd-linf --attack degradation-eps-pgd-linf \
     --attack degradation-adaptive-linf --out "$runs/degradation-$defense"
done
for defense in smoothing-digits-0.25 smoothing-digits-0.50 macer-digits-0.25 macer-digits-0.50; do
  ev --defense $defense --attack degradation-spgd --attack degradation-adaptive --attack degradation-pgd \
     --out "$runs/degradation-$defense"
done

# Spoofing.
for defense in gloro-digits-0.25 gloro-digits-0.50 kw-digits-0.05 kw-digits-0.10 smoothing-digits-0.25 \
               smoothing-digits-0.50 smoothing-digits-1.00 macer-digits-0.25 macer-digits-0.50; do
  ev --defense $defense --attack shadow-1ch --out "$runs/spoofing-$defense"
done
ev --defense smoothing-rgbdigits-0.25 --attack shadow --attack shadow-1ch --out "$runs/spoofing-smoothing-rgbdigits-0.25"

if [ -d "${RSBENCH_DATA:-}/mnist" ]; then  # the released KW MNIST model and the MNIST test set
  ev --defense kw-mnist-0.1 --attack pgd-linf --out "$runs/evasion-kw-mnist-0.1"
  ev --defense kw-mnist-0.1 --attack degradation-pgd --attack degradation-eps-pgd --attack degradation-adaptive \
     --out "$runs/degradation-kw-mnist-0.1"
fi

for run in "$runs"/*/; do rsbench leaderboard add "$run"; done
rsbench submission validate submissions/fmn-smoothed
rsbench submission verify submissions/fmn-smoothed
rsbench leaderboard render
