// CPU emulation of the CUDA kernels' per-thread code, for checking their arithmetic without a GPU.
//
// Original code for this project (MIT). Not part of any plugin: only the opt-in test
// `SG2KD_TEST_EMULATION=1 pytest tests/test_custom_ops.py -k emulation` (and scripts/check_cuda_build.sh
// with that variable) compiles it, as a CPU extension. It includes the same headers as the .cu files and
// replays a launch block by block and thread by thread, with the shared-memory phases (__syncthreads)
// as sequential loops. Everything runs in float64.
//
// ufd(x, f, [up_x, up_y, down_x, down_y], [pad_x0, pad_x1, pad_y0, pad_y1], flip, gain,
//     tile_w, tile_h, threads, direct) -> y
// ba(x, b, ref, g1, g2, bias_step, act, mode, ref_is_y, alpha, gain, clamp) -> out (flat)

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "bias_act.h"
#include "upfirdn2d.h"

namespace {

using sg2kd::UpFirDnParams;

int window(int tile, int up, int down, int taps) { return ((tile - 1) * down + taps - 1) / up + 1; }

UpFirDnParams params(const torch::Tensor& x, const torch::Tensor& f, const std::vector<int64_t>& ud,
                     const std::vector<int64_t>& pad, bool flip, double gain) {
    UpFirDnParams p{};
    p.planes = x.size(0) * x.size(1), p.channels = x.size(1);
    p.in_h = x.size(2), p.in_w = x.size(3);
    p.up_x = ud[0], p.up_y = ud[1], p.down_x = ud[2], p.down_y = ud[3];
    p.pad_x0 = pad[0], p.pad_y0 = pad[2];
    p.taps_y = f.size(0), p.taps_x = f.size(1), p.flip = flip, p.gain = gain;
    int64_t sh = x.size(2) * p.up_y + pad[2] + pad[3] - p.taps_y;
    int64_t sw = x.size(3) * p.up_x + pad[0] + pad[1] - p.taps_x;
    p.out_h = sh < 0 ? 0 : sh / p.down_y + 1;
    p.out_w = sw < 0 ? 0 : sw / p.down_x + 1;
    p.in_sn = x.stride(0), p.in_sc = x.stride(1), p.in_sh = x.stride(2), p.in_sw = x.stride(3);
    return p;
}

torch::Tensor ufd(torch::Tensor x, torch::Tensor f, std::vector<int64_t> ud, std::vector<int64_t> pad,
                  bool flip, double gain, int64_t tile_w, int64_t tile_h, int64_t threads, bool direct) {
    x = x.to(torch::kDouble);
    f = f.to(torch::kDouble).contiguous();
    UpFirDnParams p = params(x, f, ud, pad, flip, gain);
    auto y = torch::full({x.size(0), x.size(1), p.out_h, p.out_w}, NAN, x.options());
    p.out_sn = y.stride(0), p.out_sc = y.stride(1), p.out_sh = y.stride(2), p.out_sw = y.stride(3);
    const double* xp = x.data_ptr<double>();
    const double* fp = f.data_ptr<double>();
    double* yp = y.data_ptr<double>();
    if (direct) {
        for (int64_t pl = 0; pl < p.planes; ++pl)
            for (int oy = 0; oy < p.out_h; ++oy)
                for (int ox = 0; ox < p.out_w; ++ox) sg2kd::ufd_direct_one(p, xp, fp, yp, pl, ox, oy);
        return y;
    }
    p.tile_out_w = tile_w, p.tile_out_h = tile_h;
    p.tile_in_w = window(tile_w, p.up_x, p.down_x, p.taps_x);
    p.tile_in_h = window(tile_h, p.up_y, p.down_y, p.taps_y);
    std::vector<double> sg(p.taps_x * p.taps_y), sx(p.tile_in_w * p.tile_in_h);
    for (int k = 0; k < p.taps_x * p.taps_y; ++k) sg[k] = sg2kd::ufd_tap(p, fp, k);
    for (int oy0 = 0; oy0 < p.out_h; oy0 += p.tile_out_h) {
        for (int ox0 = 0; ox0 < p.out_w; ox0 += p.tile_out_w) {
            int ix0, iy0, unused;
            sg2kd::ufd_first(ox0, p.up_x, p.down_x, p.pad_x0, &ix0, &unused);
            sg2kd::ufd_first(oy0, p.up_y, p.down_y, p.pad_y0, &iy0, &unused);
            for (int64_t pl = 0; pl < p.planes; ++pl) {
                std::fill(sx.begin(), sx.end(), NAN);  // a read outside the loaded window shows up as NaN
                for (int t = 0; t < threads; ++t) sg2kd::ufd_load_tile(p, xp, pl, ix0, iy0, sx.data(), t, threads);
                for (int t = 0; t < threads; ++t)
                    sg2kd::ufd_compute_tile(p, sx.data(), sg.data(), yp, pl, ox0, oy0, ix0, iy0, t, threads);
            }
        }
    }
    return y;
}

torch::Tensor ba(torch::Tensor x, torch::Tensor b, torch::Tensor ref, torch::Tensor g1, torch::Tensor g2,
                 int64_t bias_step, int64_t act, int64_t mode, bool ref_is_y, double alpha, double gain,
                 double clamp) {
    sg2kd::BiasActParams p{};
    p.numel = std::max(x.numel(), ref.numel());
    p.bias_step = bias_step, p.bias_len = b.numel();
    p.act = act, p.mode = mode, p.ref_is_y = ref_is_y, p.alpha = alpha, p.gain = gain, p.clamp = clamp;
    auto out = torch::empty({p.numel}, torch::kDouble);
    auto at = [](const torch::Tensor& t, int64_t i) { return t.numel() ? t.data_ptr<double>()[i] : 0.0; };
    for (int64_t i = 0; i < p.numel; ++i) {
        double bv = p.bias_len ? b.data_ptr<double>()[(i / bias_step) % p.bias_len] : 0.0;
        out.data_ptr<double>()[i] = sg2kd::bias_act_one<double>(p, at(x, i), at(ref, i), bv, at(g1, i), at(g2, i));
    }
    return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("ufd", &ufd, "upfirdn2d kernel replayed on the CPU (float64)");
    m.def("ba", &ba, "bias_act kernel arithmetic on the CPU (float64, flat contiguous tensors)");
}
