#!/usr/bin/env bash
# GPU verification on a bare device machine (Python 3.12, torch >= 2.11, no network, no pip installs): the
# project runs from the checkout with PYTHONPATH and the bundle .gpu/ that scripts/gpu_prepare.sh made.
# One call per stage, each under a hard time budget; the log and a short table (written last) go to $OUT.
#
#   bash scripts/gpu_verify.sh 1   # <= 4 min: CUDA-op build, CUDA tests, ops / KD-overhead / train-speed
#                                  #   benchmarks at 256x256 (paper256, fp16, KD off and on), train + resume
#   bash scripts/gpu_verify.sh 2   # <= 6 min: 100-shot Obama 64x64, DA vs DA+KD (EfficientNet teacher),
#                                  #   2 seeds each, 4 runs at once, --holdout=20, FID/KID (fp16 detector)
#   DRY=1 bash scripts/gpu_verify.sh 1   # CPU, no GPU: checks the bundle and logs the plan; every python
#                                        #   call only checks the files it names (the CPU test suite runs it)
#
# Environment: OUT (default gpu_out; at most 8 files), GPU_BUNDLE (.gpu), WORK (scratch, /tmp/sg2kd_gpu),
# W (stage 2 KD weight, default 0.03), KIMG (stage 2 length, default 10).
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=${1:-}
[[ $STAGE == 1 || $STAGE == 2 ]] || { echo "usage: scripts/gpu_verify.sh 1|2" >&2; exit 2; }
OUT=${OUT:-gpu_out}; GPU=${GPU_BUNDLE:-.gpu}; WORK=${WORK:-/tmp/sg2kd_gpu}; DRY=${DRY:-}
W=${W:-0.03}; KIMG=${KIMG:-10}
BUDGET=$([[ $STAGE == 1 ]] && echo 235 || echo 345)  # seconds for all steps of the stage
TORCH_MIN=2.11
mkdir -p "$OUT" "$WORK"
LOG="$OUT/stage$STAGE.log"; TABLE="$OUT/table$STAGE.md"
: > "$LOG"
export PYTHONPATH="$PWD:$WORK/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
START=$SECONDS; ROWS=(); MISSING=0

fail() { echo "gpu_verify: $*" | tee -a "$LOG" >&2; exit 1; }

check_files() {  # DRY: every repository file and bundle file named in a command must exist
  local arg path
  for arg in "$@"; do
    path=${arg#*=}; path=${path#torchscript:}
    if [[ $path == *.py || $path == *.zip || $path == *.pt ]] && [[ $path != *'*'* ]]; then
      [[ -e $path ]] || { echo "missing: $path" >> "$LOG"; MISSING=$((MISSING + 1)); }
    fi
  done
  if [[ ${1:-} == python && ${2:-} == -m && ${3:-} != pytest ]]; then
    [[ -e ${3//.//}.py ]] || { echo "missing module: $3" >> "$LOG"; MISSING=$((MISSING + 1)); }
  fi
}

step() {  # step NAME SECONDS CMD...: run under the smaller of SECONDS and what is left of the budget
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - (SECONDS - START)))
  ((limit > left)) && limit=$left
  if ((limit < 5)); then ROWS+=("| $name | skipped: stage budget spent | | |"); return; fi
  echo "=== $name (limit ${limit} s): $*" >> "$LOG"
  if [[ -n $DRY ]]; then "$@" >> "$LOG" 2>&1; ROWS+=("| $name | planned | | |"); return; fi
  local t0=$SECONDS out="$WORK/step.out" rc status
  # bash -c with the helper functions defined, so a step can be a function and still be killed on time
  timeout -k 5 "$limit" bash -c "$(declare -f few_shot train_and_resume)"'; "$@"' _ "$@" > "$out" 2>&1; rc=$?
  cat "$out" >> "$LOG"
  case $rc in 0) status=ok ;; 124 | 137) status="TIMEOUT (${limit} s)" ;; *) status="FAILED (rc $rc)" ;; esac
  local last; last=$(grep -v '^\s*$' "$out" | tail -n 1 | cut -c1-160 | tr '|' '/')
  ROWS+=("| $name | $status | $((SECONDS - t0)) | $last |")
}

write_table() {
  { echo "| step | status | s | last output line |"; echo "|---|---|---|---|"; printf '%s\n' "${ROWS[@]}"
    echo; echo "stage $STAGE: $((SECONDS - START)) s of a $BUDGET s budget; full log: $(basename "$LOG")"
  } > "$TABLE"
  cat "$TABLE"
  if [[ -n $DRY ]]; then ((MISSING == 0)) || fail "$MISSING missing files (see $LOG)"; fi
  local n; n=$(find "$OUT" -type f | wc -l)
  ((n <= 8)) || fail "$OUT holds $n files; at most 8 come back from the device"
}

environment() {  # one clear line when the machine cannot run the stage
  [[ -f $GPU/manifest.json ]] || fail "$GPU/manifest.json missing: run scripts/gpu_prepare.sh here and carry $GPU"
  python scripts/gpu_bundle.py check --dest="$GPU" >> "$LOG" 2>&1 || fail "$(tail -n 1 "$LOG")"
  python - "$TORCH_MIN" "${DRY:-}" >> "$LOG" 2>&1 <<'PY' || fail "$(tail -n 1 "$LOG")"
import sys, platform, torch
need, dry = tuple(int(v) for v in sys.argv[1].split('.')), sys.argv[2]
have = tuple(int(v) for v in torch.__version__.split('+')[0].split('.')[:2])
print(f'python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}')
if have < need:
    sys.exit(f'torch {torch.__version__} is older than the supported {sys.argv[1]}')
if not dry and not torch.cuda.is_available():
    sys.exit('no CUDA GPU is visible to torch')
if torch.cuda.is_available():
    print('GPU:', torch.cuda.get_device_name(0))
PY
  mkdir -p "$WORK/site"
  for wheel in "$GPU"/wheels/*.whl; do [[ -e $wheel ]] && python -m zipfile -e "$wheel" "$WORK/site"; done
}

few_shot() {  # the few-shot experiment of experiments/results/obama32-kd at 64x64, from the bundle
  python experiments/few_shot.py --data="$GPU/obama64.zip" --outdir="$WORK/obama64" --res=64 --kimg="$KIMG" \
    --tick=1 --snap=5 --eval-kimg="$((KIMG / 2)),$KIMG" --holdout=20 --teacher="torchscript:$GPU/efficientnet-fp16.pt" \
    --detector="$GPU/inception-fp16.pt" --metrics=fid1k_train,kid1k_train --seeds=1,2 --jobs=4 --variant='DA=' \
    --variant="KD_w$W=--kd=aggregated,correlated --kd-agkd-weight=$W --kd-cgkd-weight=$W" "$@" \
    -- --cfg=auto --mirror=1 --workers=2
}

train_and_resume() {  # a short run that writes a snapshot, then an exact resume from it (--resume=auto)
  local runs="$WORK/resume_runs" args=(--data="$GPU/obama64.zip" --tick=0.1 --snap=1 --metrics=none --workers=2)
  rm -rf "$runs"
  python train.py --outdir="$runs" "${args[@]}" --kimg=0.2 || return 1
  python train.py --outdir="$runs" "${args[@]}" --kimg=0.4 --resume=auto | tee "$WORK/resume.out" || return 1
  grep -q 'Resuming exactly' "$WORK/resume.out" && grep -q 'Memory: a step at batch_gpu=' "$WORK/resume.out"
}

environment
export GPU WORK W KIMG
# DRY: every python call of the steps only checks the files it names (the functions above included)
[[ -n $DRY ]] && python() { check_files python "$@"; }
TEACHER="torchscript:$GPU/efficientnet-fp16.pt"
if [[ $STAGE == 1 ]]; then
  step 'CUDA ops build' 100 python -m torch_utils.custom_ops --build
  step 'CUDA tests' 40 python -m pytest -q -p no:cacheprovider tests/test_ops_cuda.py tests/test_training_stats.py \
    tests/test_memory.py::test_cuda_a_real_out_of_memory_is_fitted
  step 'ops benchmark (>= 3x ref)' 20 python benchmarks/ops.py --cfg=paper256 --iters=10
  step 'KD overhead 256 (<= 1.10)' 25 python benchmarks/kd_overhead.py --cfg=paper256 --res=256 --steps=8 \
    --teacher="$TEACHER"
  step 'train speed 256 KD off/on' 35 python benchmarks/train_speed.py --cfg=paper256 --res=256 --steps=8 \
    --kd=both --teacher="$TEACHER"
  step 'train + exact resume' 30 train_and_resume
else
  step 'few-shot 64x64 training' 215 few_shot
  step 'few-shot FID/KID' 120 few_shot --eval-only
  if [[ -z $DRY ]]; then
    for f in results.md fid.png kid.png gap.png samples.png; do
      [[ -f $WORK/obama64/$f ]] && cp "$WORK/obama64/$f" "$OUT/"
    done
  fi
fi
write_table
