#!/usr/bin/env bash
# The GPU measurements of "Speed and scale" (docs/how-to/scale.md), in one go (about 5 minutes on a recent GPU):
# certification throughput of Cohen's ResNet-110 at 32x32 and a ResNet-50 at 224x224 (random weights),
# one image and 8 images per pass, fp32 and bf16 with channels-last, against the bare forward limit;
# CAA's step memory and seconds per sample at N = 1500, M = 100 (the paper: 3.34 s on a P100);
# CAA batched against one sample at a time. Each step has its own time limit, so one slow step does
# not cost the others. Usage: benchmarks/gpu_speed.sh [OUTPUT_FILE]
set -uo pipefail
out=${1:-gpu_speed.txt}
step() { echo "\$ $*" | tee -a "$out"; timeout 240 "$@" 2>&1 | tee -a "$out"; echo | tee -a "$out"; }
: > "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee -a "$out"
step python benchmarks/certify_throughput.py --device cuda --model cifar-resnet110 --n 100000 --batch-size 1000 --images 8
step python benchmarks/certify_throughput.py --device cuda --model cifar-resnet110 --n 100000 --batch-size 1000 --images 8 \
  --precision bf16 --channels-last
step python benchmarks/certify_throughput.py --device cuda --model imagenet-resnet50 --n 10000 --batch-size 400 --images 4
step python benchmarks/certify_throughput.py --device cuda --model digits-cnn --n 100000 --batch-size 1000 --images 32
step python benchmarks/caa_memory_time.py --device cuda --model cifar-resnet110 --per-sample
step python benchmarks/batched_attacks.py --device cuda
