#!/usr/bin/env bash
# Stage 2 of the KD experiment: DiffAugment (DA) against DA + KD-DLGAN (AGKD + CGKD, paper variant) at the
# KD weight W picked in stage 1, two seeds (1 and 2, not stage 1's seed 0, so the verdict is not read on the
# run the weight was chosen on), 20 kimg, FID/KID of 1k generated images against the training images at
# 10, 15 and 20 kimg. Same data, network and teacher as stage 1. Run from the repository root; running it
# again continues where it stopped.
#   W=0.03 bash experiments/results/obama32-kd/stage2.sh
# VARIANTS=DA or VARIANTS=KD runs only one side, SEEDS=1 only one seed (each run is independent).
set -euo pipefail
OUT=${OUT:-../exp/obama32-kd/stage2}
W=${W:?set W to the KD weight picked in stage 1}
VARIANTS=${VARIANTS:-DA,KD}
SEEDS=${SEEDS:-1,2}
args=()
[[ ,$VARIANTS, == *,DA,* ]] && args+=(--variant='DA=')
[[ ,$VARIANTS, == *,KD,* ]] && args+=(--variant="KD_w${W}=--kd=aggregated,correlated --kd-agkd-weight=${W} --kd-cgkd-weight=${W}")
exec python experiments/few_shot.py --source=../shared/data/100-shot-obama --outdir="$OUT" \
  --res=32 --kimg=20 --tick=1 --snap=5 --eval-kimg=10,15,20 --holdout=20 --teacher=efficientnet \
  --metrics=fid1k_train,kid1k_train --seeds="$SEEDS" "${args[@]}" \
  -- --cbase=4096 --cmax=128 --batch=32 --mirror=1
