// PyTorch binding of the upfirdn2d CUDA kernels (original code for this project, MIT).
//
// upfirdn2d(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip, gain) -> y
//   x: [N, C, H, W] CUDA tensor, float16 / bfloat16 / float32 / float64, any strides.
//   f: [taps_y, taps_x] filter on x's device, float64 when x is float64 and float32 otherwise.
//   y: [N, C, H_out, W_out] with x's dtype and memory format (contiguous or channels_last), where
//      W_out = (W * up_x + pad_x0 + pad_x1 - taps_x) / down_x + 1 (same for H).
// One axis at a time can be processed by passing a [1, taps] or [taps, 1] filter with the other
// axis's factors set to 1 and its padding to 0; the Python side does this for separable filters.

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "upfirdn2d.h"

namespace {

using sg2kd::UpFirDnParams;

int out_size(int64_t in, int up, int pad0, int pad1, int taps, int down) {
    int64_t span = in * up + pad0 + pad1 - taps;
    return span < 0 ? 0 : static_cast<int>(span / down + 1);
}

UpFirDnParams make_params(const torch::Tensor& x, const torch::Tensor& f, const torch::Tensor& y,
                          std::vector<int64_t> ud, std::vector<int64_t> pad, bool flip, double gain) {
    UpFirDnParams p{};
    p.planes = x.size(0) * x.size(1);
    p.channels = x.size(1);
    p.in_h = static_cast<int>(x.size(2));
    p.in_w = static_cast<int>(x.size(3));
    p.out_h = static_cast<int>(y.size(2));
    p.out_w = static_cast<int>(y.size(3));
    p.in_sn = x.stride(0), p.in_sc = x.stride(1), p.in_sh = x.stride(2), p.in_sw = x.stride(3);
    p.out_sn = y.stride(0), p.out_sc = y.stride(1), p.out_sh = y.stride(2), p.out_sw = y.stride(3);
    p.up_x = static_cast<int>(ud[0]), p.up_y = static_cast<int>(ud[1]);
    p.down_x = static_cast<int>(ud[2]), p.down_y = static_cast<int>(ud[3]);
    p.pad_x0 = static_cast<int>(pad[0]), p.pad_y0 = static_cast<int>(pad[2]);
    p.taps_y = static_cast<int>(f.size(0));
    p.taps_x = static_cast<int>(f.size(1));
    p.flip = flip ? 1 : 0;
    p.gain = gain;
    return p;
}

torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int64_t up_x, int64_t up_y, int64_t down_x,
                        int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1,
                        bool flip, double gain) {
    TORCH_CHECK(x.is_cuda() && x.dim() == 4, "upfirdn2d: x must be a [N, C, H, W] CUDA tensor");
    TORCH_CHECK(f.device() == x.device() && f.dim() == 2 && f.numel() > 0,
                "upfirdn2d: f must be a non-empty [taps_y, taps_x] tensor on x's device");
    auto acc = x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
    TORCH_CHECK(f.scalar_type() == acc, "upfirdn2d: f must be float64 for float64 x and float32 otherwise");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: factors must be >= 1");
    TORCH_CHECK(x.size(2) * up_y + std::abs(pad_y0) + std::abs(pad_y1) + f.size(0) < (1LL << 30) &&
                    x.size(3) * up_x + std::abs(pad_x0) + std::abs(pad_x1) + f.size(1) < (1LL << 30),
                "upfirdn2d: image too large");
    f = f.contiguous();
    const c10::cuda::OptionalCUDAGuard guard(x.device());
    int out_h = out_size(x.size(2), up_y, pad_y0, pad_y1, f.size(0), down_y);
    int out_w = out_size(x.size(3), up_x, pad_x0, pad_x1, f.size(1), down_x);
    auto fmt = (x.is_contiguous() || !x.is_contiguous(at::MemoryFormat::ChannelsLast))
                   ? at::MemoryFormat::Contiguous
                   : at::MemoryFormat::ChannelsLast;
    auto y = torch::empty({x.size(0), x.size(1), out_h, out_w}, x.options().memory_format(fmt));
    if (y.numel() == 0) return y;
    if (x.numel() == 0) return y.zero_();
    auto p = make_params(x, f, y, {up_x, up_y, down_x, down_y}, {pad_x0, pad_x1, pad_y0, pad_y1}, flip, gain);
    void* stream = c10::cuda::getCurrentCUDAStream().stream();
    int status = 0;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d", [&] {
        using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
        status = sg2kd::launch_upfirdn2d<scalar_t, acc_t>(p, x.data_ptr<scalar_t>(), f.data_ptr<acc_t>(),
                                                          y.data_ptr<scalar_t>(), stream);
    });
    TORCH_CHECK(status == 0, "upfirdn2d: kernel launch failed: ",
                cudaGetErrorString(static_cast<cudaError_t>(status)));
    return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "Upsample, pad, FIR-filter and downsample [N, C, H, W] images (CUDA)");
}
