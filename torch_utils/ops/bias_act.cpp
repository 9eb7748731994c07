// PyTorch binding of the bias_act CUDA kernel (original code for this project, MIT).
//
// bias_act(x, b, ref, g1, g2, dim, act, mode, ref_is_y, alpha, gain, clamp) -> out
//   x, ref, g1, g2: CUDA tensors of one shape, dtype (float16 / bfloat16 / float32 / float64) and
//       dense memory layout (contiguous or channels_last); an undefined/empty tensor marks one that the
//       mode does not use (see bias_act.h: mode 0 reads x; mode 1 reads ref and g1; mode 2 ref, g1, g2).
//   b: [x.shape[dim]] bias of the same dtype, or an empty tensor for none.
//   act: activation id (0 linear, 1 relu, 2 lrelu, 3 tanh, 4 sigmoid, 5 elu, 6 selu, 7 softplus, 8 swish).
//   clamp < 0 disables clamping. Returns a tensor like the primary input (x in mode 0, ref otherwise).

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "bias_act.h"

namespace {

bool used(const torch::Tensor& t) { return t.defined() && t.numel() > 0; }

void check_like(const torch::Tensor& t, const torch::Tensor& like, const char* name) {
    if (!used(t)) return;
    TORCH_CHECK(t.device() == like.device() && t.scalar_type() == like.scalar_type(), "bias_act: ", name,
                " must match the input's device and dtype");
    TORCH_CHECK(t.sizes() == like.sizes() && t.strides() == like.strides(), "bias_act: ", name,
                " must match the input's shape and strides");
}

bool dense(const torch::Tensor& t) {
    return t.is_contiguous() || t.is_contiguous(at::MemoryFormat::ChannelsLast) ||
           t.is_contiguous(at::MemoryFormat::ChannelsLast3d);
}

torch::Tensor bias_act(torch::Tensor x, torch::Tensor b, torch::Tensor ref, torch::Tensor g1, torch::Tensor g2,
                       int64_t dim, int64_t act, int64_t mode, bool ref_is_y, double alpha, double gain,
                       double clamp) {
    TORCH_CHECK(mode >= 0 && mode <= 2, "bias_act: mode must be 0, 1 or 2");
    TORCH_CHECK(act >= 0 && act <= 8, "bias_act: unknown activation id");
    const torch::Tensor& primary = mode == 0 ? x : ref;
    TORCH_CHECK(used(primary) && primary.is_cuda(), "bias_act: the input must be a non-empty CUDA tensor");
    TORCH_CHECK(dense(primary), "bias_act: the input must be contiguous or channels_last");
    TORCH_CHECK(dim >= 0 && dim < primary.dim(), "bias_act: dim out of range");
    TORCH_CHECK(mode == 0 || used(g1), "bias_act: modes 1 and 2 need g1");
    TORCH_CHECK(mode != 2 || (used(g2) && !ref_is_y), "bias_act: mode 2 needs g2 and an x reference");
    for (auto* t : {&x, &ref, &g1, &g2}) check_like(*t, primary, "every tensor argument");
    if (used(b)) {
        TORCH_CHECK(b.dim() == 1 && b.size(0) == primary.size(dim), "bias_act: b must be [x.shape[dim]]");
        TORCH_CHECK(b.device() == primary.device() && b.scalar_type() == primary.scalar_type(),
                    "bias_act: b must match the input's device and dtype");
        b = b.contiguous();
    }
    const c10::cuda::OptionalCUDAGuard guard(primary.device());
    auto out = torch::empty_like(primary);
    sg2kd::BiasActParams p{};
    p.numel = primary.numel();
    p.bias_step = primary.stride(dim);
    p.bias_len = used(b) ? b.size(0) : 0;
    p.act = static_cast<int>(act);
    p.mode = static_cast<int>(mode);
    p.ref_is_y = ref_is_y ? 1 : 0;
    p.alpha = alpha, p.gain = gain, p.clamp = clamp;
    void* stream = c10::cuda::getCurrentCUDAStream().stream();
    int status = 0;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, primary.scalar_type(), "bias_act", [&] {
        using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
        auto ptr = [](const torch::Tensor& t) { return used(t) ? t.data_ptr<scalar_t>() : nullptr; };
        status = sg2kd::launch_bias_act<scalar_t, acc_t>(p, ptr(x), ptr(b), ptr(ref), ptr(g1), ptr(g2),
                                                         out.data_ptr<scalar_t>(), stream);
    });
    TORCH_CHECK(status == 0, "bias_act: kernel launch failed: ", cudaGetErrorString(static_cast<cudaError_t>(status)));
    return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &bias_act, "Fused bias, activation, gain and clamp, and its derivatives (CUDA)");
}
