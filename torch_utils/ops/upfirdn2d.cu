// upfirdn2d CUDA kernels: zero-insertion upsampling, padding, FIR filtering and decimation in one pass.
//
// Original code for this project (MIT). Only light headers are included so that nvcc stays fast; the
// PyTorch glue lives in upfirdn2d.cpp.
//
// Tiled kernel: a block owns a tile_out_w x tile_out_h output tile of one plane at a time. It stages
// the filter taps (flip and gain applied) and the input window that the tile needs (zeros outside
// the image) in shared memory, then every thread accumulates its outputs over the taps that meet
// real input samples only (see upfirdn2d.h). Planes are walked with a grid-stride loop along z.
// Direct kernel: one thread per output reading global memory, for filters or factors so large that
// the window would not fit in shared memory.

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include "upfirdn2d.h"

namespace sg2kd {

template <typename T, typename A>
__global__ void upfirdn2d_tiled_kernel(UpFirDnParams p, const T* __restrict__ x, const A* __restrict__ f,
                                       T* __restrict__ y) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    A* sg = reinterpret_cast<A*>(smem_raw);
    A* sx = sg + p.taps_x * p.taps_y;
    const int tid = threadIdx.x;
    const int nthreads = blockDim.x;
    for (int k = tid; k < p.taps_x * p.taps_y; k += nthreads) sg[k] = ufd_tap(p, f, k);

    const int ox0 = blockIdx.x * p.tile_out_w;
    const int oy0 = blockIdx.y * p.tile_out_h;
    int ix0, iy0, unused;
    ufd_first(ox0, p.up_x, p.down_x, p.pad_x0, &ix0, &unused);
    ufd_first(oy0, p.up_y, p.down_y, p.pad_y0, &iy0, &unused);

    for (int64_t plane = blockIdx.z; plane < p.planes; plane += gridDim.z) {
        __syncthreads();  // the previous plane's window (and, first time, the taps) is no longer read
        ufd_load_tile(p, x, plane, ix0, iy0, sx, tid, nthreads);
        __syncthreads();
        ufd_compute_tile(p, sx, sg, y, plane, ox0, oy0, ix0, iy0, tid, nthreads);
    }
}

template <typename T, typename A>
__global__ void upfirdn2d_direct_kernel(UpFirDnParams p, const T* __restrict__ x, const A* __restrict__ f,
                                        T* __restrict__ y) {
    const int ox = blockIdx.x * blockDim.x + threadIdx.x;
    const int oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= p.out_w || oy >= p.out_h) return;
    for (int64_t plane = blockIdx.z; plane < p.planes; plane += gridDim.z)
        ufd_direct_one(p, x, f, y, plane, ox, oy);
}

static int pow2_at_least(int v, int cap) {
    int r = 1;
    while (r < v && r < cap) r *= 2;
    return r;
}

// Window of input samples that a tile of `tile` outputs reads along one axis.
static int window(int tile, int up, int down, int taps) { return ((tile - 1) * down + taps - 1) / up + 1; }

static const int kMaxPlanesPerGrid = 65535;
static const size_t kMaxSharedBytes = 48 * 1024;

template <typename T, typename A>
int launch_upfirdn2d(const UpFirDnParams& params, const T* x, const A* f, T* y, void* stream_ptr) {
    UpFirDnParams p = params;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    const int gz = static_cast<int>(p.planes < kMaxPlanesPerGrid ? p.planes : kMaxPlanesPerGrid);

    // About 1024 outputs per tile, 32 wide when the image allows; shrink the height until it fits.
    p.tile_out_w = pow2_at_least(p.out_w, 32);
    p.tile_out_h = pow2_at_least(p.out_h, 1024 / p.tile_out_w);
    size_t smem = 0;
    for (;;) {
        p.tile_in_w = window(p.tile_out_w, p.up_x, p.down_x, p.taps_x);
        p.tile_in_h = window(p.tile_out_h, p.up_y, p.down_y, p.taps_y);
        smem = sizeof(A) * (static_cast<size_t>(p.taps_x) * p.taps_y +
                            static_cast<size_t>(p.tile_in_w) * p.tile_in_h);
        if (smem <= kMaxSharedBytes || p.tile_out_h == 1) break;
        p.tile_out_h /= 2;
    }

    if (smem <= kMaxSharedBytes) {
        int outputs = p.tile_out_w * p.tile_out_h;
        int threads = outputs >= 256 ? 256 : ((outputs + 31) / 32) * 32;
        dim3 grid((p.out_w + p.tile_out_w - 1) / p.tile_out_w, (p.out_h + p.tile_out_h - 1) / p.tile_out_h, gz);
        upfirdn2d_tiled_kernel<T, A><<<grid, threads, smem, stream>>>(p, x, f, y);
    } else {
        dim3 block(32, 8);
        dim3 grid((p.out_w + 31) / 32, (p.out_h + 7) / 8, gz);
        upfirdn2d_direct_kernel<T, A><<<grid, block, 0, stream>>>(p, x, f, y);
    }
    return static_cast<int>(cudaGetLastError());
}

template int launch_upfirdn2d<float, float>(const UpFirDnParams&, const float*, const float*, float*, void*);
template int launch_upfirdn2d<double, double>(const UpFirDnParams&, const double*, const double*, double*,
                                              void*);
template int launch_upfirdn2d<c10::Half, float>(const UpFirDnParams&, const c10::Half*, const float*,
                                                c10::Half*, void*);
template int launch_upfirdn2d<c10::BFloat16, float>(const UpFirDnParams&, const c10::BFloat16*, const float*,
                                                    c10::BFloat16*, void*);

}  // namespace sg2kd
