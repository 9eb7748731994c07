// upfirdn2d: shared declarations and the per-thread arithmetic of the tiled kernel.
//
// Original code for this project (MIT). The per-thread work is written as host+device inline
// functions so that the tiling arithmetic can also be compiled and checked on a CPU.
//
// Semantics (one image plane, one axis; the other axis is identical):
//   the input x[0..in) is upsampled by inserting up-1 zeros after every sample, padded by pad0
//   zeros in front (negative pad0 crops), correlated with the taps g[0..taps) and decimated:
//       y[o] = sum_{t=0}^{taps-1} z[o*down + t] * g[t],   z[j] = x[(j - pad0) / up] when
//       (j - pad0) is a non-negative multiple of up below in*up, and 0 otherwise.
//   Only input samples i with t = i*up + pad0 - o*down in [0, taps) contribute, so the kernel
//   walks those i directly and never touches the inserted zeros.
//   g is f itself when flip is set (correlation), else f reversed on both axes (convolution),
//   scaled by gain.

#pragma once

#include <cstdint>

#include "sg2kd_common.h"

namespace sg2kd {

struct UpFirDnParams {
    int64_t planes;  // N * C
    int64_t channels;  // C (planes are enumerated n-major)
    int in_w, in_h, out_w, out_h;
    int64_t in_sn, in_sc, in_sh, in_sw;  // input strides in elements
    int64_t out_sn, out_sc, out_sh, out_sw;  // output strides in elements
    int up_x, up_y, down_x, down_y;
    int pad_x0, pad_y0;  // leading padding (negative: crop); trailing padding only sets out_w/out_h
    int taps_x, taps_y;  // filter is [taps_y, taps_x], row-major
    int flip;  // 1: use the taps as given (correlation); 0: reverse them (convolution)
    double gain;
    // Tiling (tiled kernel only): outputs per block and the input window each block reads.
    int tile_out_w, tile_out_h, tile_in_w, tile_in_h;
};

// Floor and ceiling division for a positive divisor and a dividend of any sign.
SG2KD_HD int floor_div(int a, int b) { return (a >= 0) ? a / b : -((-a + b - 1) / b); }
SG2KD_HD int ceil_div(int a, int b) { return -floor_div(-a, b); }

// Filter tap k (row-major index into [taps_y, taps_x]) as used by the correlation, gain included.
template <typename A>
SG2KD_HD A ufd_tap(const UpFirDnParams& p, const A* f, int k) {
    int n = p.taps_x * p.taps_y;
    return f[p.flip ? k : n - 1 - k] * static_cast<A>(p.gain);
}

// First input sample feeding output o and the tap that meets it (in [0, up)).
SG2KD_HD void ufd_first(int o, int up, int down, int pad0, int* i, int* t) {
    *i = ceil_div(o * down - pad0, up);
    *t = *i * up + pad0 - o * down;
}

// Fill the shared input window of one plane: rows iy0.., columns ix0.., zeros outside the image.
template <typename T, typename A>
SG2KD_HD void ufd_load_tile(const UpFirDnParams& p, const T* x, int64_t plane, int ix0, int iy0, A* sx,
                            int tid, int nthreads) {
    const T* xp = x + (plane / p.channels) * p.in_sn + (plane % p.channels) * p.in_sc;
    int n = p.tile_in_w * p.tile_in_h;
    for (int k = tid; k < n; k += nthreads) {
        int ix = ix0 + k % p.tile_in_w;
        int iy = iy0 + k / p.tile_in_w;
        A v = 0;
        if (ix >= 0 && ix < p.in_w && iy >= 0 && iy < p.in_h)
            v = static_cast<A>(xp[iy * p.in_sh + ix * p.in_sw]);
        sx[k] = v;
    }
}

// Compute the outputs of one tile from the shared window sx and the shared taps sg.
template <typename T, typename A>
SG2KD_HD void ufd_compute_tile(const UpFirDnParams& p, const A* sx, const A* sg, T* y, int64_t plane,
                               int ox0, int oy0, int ix0, int iy0, int tid, int nthreads) {
    T* yp = y + (plane / p.channels) * p.out_sn + (plane % p.channels) * p.out_sc;
    int n = p.tile_out_w * p.tile_out_h;
    for (int k = tid; k < n; k += nthreads) {
        int ox = ox0 + k % p.tile_out_w;
        int oy = oy0 + k / p.tile_out_w;
        if (ox >= p.out_w || oy >= p.out_h) continue;
        int ix, tx0, iy, ty;
        ufd_first(ox, p.up_x, p.down_x, p.pad_x0, &ix, &tx0);
        ufd_first(oy, p.up_y, p.down_y, p.pad_y0, &iy, &ty);
        A acc = 0;
        for (const A* row = sx + (iy - iy0) * p.tile_in_w + (ix - ix0); ty < p.taps_y;
             ty += p.up_y, row += p.tile_in_w) {
            const A* g = sg + ty * p.taps_x;
            const A* s = row;
            for (int tx = tx0; tx < p.taps_x; tx += p.up_x, ++s) acc += *s * g[tx];
        }
        yp[oy * p.out_sh + ox * p.out_sw] = static_cast<T>(acc);
    }
}

// One output computed straight from global memory (used when a tile does not fit in shared memory).
template <typename T, typename A>
SG2KD_HD void ufd_direct_one(const UpFirDnParams& p, const T* x, const A* f, T* y, int64_t plane, int ox,
                             int oy) {
    const T* xp = x + (plane / p.channels) * p.in_sn + (plane % p.channels) * p.in_sc;
    int ix0, tx0, iy, ty;
    ufd_first(ox, p.up_x, p.down_x, p.pad_x0, &ix0, &tx0);
    ufd_first(oy, p.up_y, p.down_y, p.pad_y0, &iy, &ty);
    A acc = 0;
    for (; ty < p.taps_y; ty += p.up_y, ++iy) {
        if (iy < 0 || iy >= p.in_h) continue;
        int ix = ix0;
        for (int tx = tx0; tx < p.taps_x; tx += p.up_x, ++ix) {
            if (ix < 0 || ix >= p.in_w) continue;
            acc += static_cast<A>(xp[iy * p.in_sh + ix * p.in_sw]) * ufd_tap(p, f, ty * p.taps_x + tx);
        }
    }
    T* yp = y + (plane / p.channels) * p.out_sn + (plane % p.channels) * p.out_sc;
    yp[oy * p.out_sh + ox * p.out_sw] = static_cast<T>(acc);
}

// Host-side launchers (defined in upfirdn2d.cu for T in float, double, c10::Half, c10::BFloat16;
// A is double for double and float otherwise). Return the launch status as a cudaError_t value.
template <typename T, typename A>
int launch_upfirdn2d(const UpFirDnParams& p, const T* x, const A* f, T* y, void* stream);

}  // namespace sg2kd
