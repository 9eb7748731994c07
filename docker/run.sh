#!/usr/bin/env bash
# Run train.py (or another script with SG2KD_SCRIPT=generate.py etc.) inside the Docker image with all
# GPUs, the current user's uid/gid, and three mounts:
#   DATA_DIR (default ./data) -> /data, RUNS_DIR (default ./runs) -> /runs, CACHE_DIR (~/.cache/dnnlib) -> /cache/dnnlib
# Example: docker/run.sh --outdir=/runs --data=/data/obama.zip --cfg=paper256 --aug=diffaug --kd=aggregated,correlated
set -euo pipefail
IMAGE=${SG2KD_IMAGE:-stylegan2-ada-kd}
DATA_DIR=$(realpath "${DATA_DIR:-./data}")
RUNS_DIR=$(realpath "${RUNS_DIR:-./runs}")
CACHE_DIR=$(realpath "${CACHE_DIR:-$HOME/.cache/dnnlib}")
SCRIPT=${SG2KD_SCRIPT:-train.py}
mkdir -p "$RUNS_DIR" "$CACHE_DIR"
exec docker run --rm --gpus all --ipc=host \
    --user "$(id -u):$(id -g)" \
    -e HOME=/tmp \
    -v "$DATA_DIR":/data:ro \
    -v "$RUNS_DIR":/runs \
    -v "$CACHE_DIR":/cache/dnnlib \
    --entrypoint python \
    "$IMAGE" "/opt/stylegan2-ada-kd/$SCRIPT" "$@"
