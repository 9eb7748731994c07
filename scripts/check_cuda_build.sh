#!/usr/bin/env bash
# Compile-only check of the CUDA plugins (upfirdn2d, bias_act): no GPU needed. Opt-in, not run by the
# default test suite. It builds into a fresh temporary cache (so it really compiles) and removes it.
#
#   scripts/check_cuda_build.sh [ARCH]        # ARCH default: $TORCH_CUDA_ARCH_LIST, else 9.0
#   SG2KD_TEST_EMULATION=1 scripts/check_cuda_build.sh   # also check the kernels' arithmetic on the CPU
#
# Needs ninja, a C++ compiler and the CUDA toolkit matching torch.version.cuda (CUDA_HOME, default
# /usr/local/cuda when it exists).
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH="${1:-${TORCH_CUDA_ARCH_LIST:-9.0}}"
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
    export CUDA_HOME=/usr/local/cuda
fi
CACHE="$(mktemp -d "${TMPDIR:-/tmp}/sg2kd_ops_check.XXXXXX")"
trap 'rm -rf "$CACHE"' EXIT
export SG2KD_OPS_CACHE="$CACHE"

echo "compile check: arch=$ARCH CUDA_HOME=${CUDA_HOME:-unset} cache=$CACHE"
start=$(date +%s)
python -m torch_utils.custom_ops --build --arch="$ARCH"
echo "compile check OK: both plugins built for arch $ARCH in $(( $(date +%s) - start )) s"

if [ "${SG2KD_TEST_EMULATION:-0}" = 1 ]; then
    python -m pytest -q tests/test_custom_ops.py -k emulation
fi
