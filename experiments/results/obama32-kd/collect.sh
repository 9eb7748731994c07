#!/usr/bin/env bash
# Copy what a stage produced (tables, plots, per-run stats and metric results, the last image grids) from
# its output folder into this results folder; snapshots stay behind (tens of MB each).
#   bash experiments/results/obama32-kd/collect.sh stage1     # from ../exp/obama32-kd/stage1
set -euo pipefail
STAGE=${1:?usage: collect.sh stage1|stage2}
SRC=${SRC:-../exp/obama32-kd/$STAGE}
DEST=$(dirname "$0")/$STAGE
mkdir -p "$DEST"
cp "$SRC"/results.md "$SRC"/*.png "$DEST"/
for run in "$SRC"/*-s[0-9]*/; do
  name=$(basename "$run")
  mkdir -p "$DEST/runs/$name"
  for dir in "$run"/0*/; do
    part=$(basename "$dir")
    mkdir -p "$DEST/runs/$name/$part"
    cp "$dir"/stats.jsonl "$dir"/training_options.json "$dir"/log.txt "$DEST/runs/$name/$part/" 2>/dev/null || true
    cp "$dir"/metric-*.jsonl "$DEST/runs/$name/$part/" 2>/dev/null || true
  done
done
du -sh "$DEST"
