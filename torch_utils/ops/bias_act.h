// bias_act: shared declarations and the element-wise arithmetic (original code for this project, MIT).
//
// With z = x + b, v = act(z) * gain and y = clamp(v, -clamp, clamp) (no clamp when clamp < 0):
//   mode 0 (forward):      out = y
//   mode 1 (1st order):    out = g1 * dy/dz                     (dy/dz = gain * act'(z) * [|v| <= clamp])
//   mode 2 (2nd order):    out = g1 * g2 * d2y/dz2              (= gain * act''(z) * [|v| <= clamp])
// In mode 1 the derivative is computed from `ref`, which is z's input x (plus the bias) when
// ref_is_y == 0, or the forward output y when ref_is_y == 1. The latter is only valid for linear,
// relu and lrelu (alpha >= 0) with gain > 0, where act' is a function of the sign of y; the clamp mask
// is then |y| < clamp, which differs from the reference only where v equals +-clamp exactly.
// Activation ids follow the order of the Python table; elu, selu and softplus use PyTorch's default
// constants (they ignore alpha, as the reference does); softplus is linear above 20 like F.softplus.

#pragma once

#include <cstdint>

#include "sg2kd_common.h"

namespace sg2kd {

enum BiasActKind { kLinear = 0, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish };

struct BiasActParams {
    int64_t numel;
    int64_t bias_step;  // stride of the bias dimension in the (dense) memory layout
    int64_t bias_len;  // 0: no bias
    int act;
    int mode;  // 0 forward, 1 first derivative, 2 second derivative
    int ref_is_y;
    double alpha, gain, clamp;
};

SG2KD_HD float ba_exp(float v) { return expf(v); }
SG2KD_HD double ba_exp(double v) { return exp(v); }
SG2KD_HD float ba_expm1(float v) { return expm1f(v); }
SG2KD_HD double ba_expm1(double v) { return expm1(v); }
SG2KD_HD float ba_log1p(float v) { return log1pf(v); }
SG2KD_HD double ba_log1p(double v) { return log1p(v); }
SG2KD_HD float ba_tanh(float v) { return tanhf(v); }
SG2KD_HD double ba_tanh(double v) { return tanh(v); }
template <typename A>
SG2KD_HD A ba_sigmoid(A v) {
    return A(1) / (A(1) + ba_exp(-v));
}

// Value (order 0), first (1) or second (2) derivative of the activation at z.
template <typename A>
SG2KD_HD A ba_act(int act, int order, A z, A alpha) {
    const A kSeluScale = A(1.0507009873554804934193349852946);
    const A kSeluAlpha = A(1.6732632423543772848170429916717);
    switch (act) {
        case kRelu:
            return order == 0 ? (z <= A(0) ? A(0) : z) : (order == 1 ? A(z > A(0)) : A(0));
        case kLrelu:
            return order == 0 ? (z > A(0) ? z : z * alpha) : (order == 1 ? (z > A(0) ? A(1) : alpha) : A(0));
        case kTanh: {
            A t = ba_tanh(z);
            return order == 0 ? t : (order == 1 ? A(1) - t * t : A(-2) * t * (A(1) - t * t));
        }
        case kSigmoid: {
            A s = ba_sigmoid(z);
            return order == 0 ? s : (order == 1 ? s * (A(1) - s) : s * (A(1) - s) * (A(1) - A(2) * s));
        }
        case kElu:
            if (z > A(0)) return order == 0 ? z : (order == 1 ? A(1) : A(0));
            return order == 0 ? ba_expm1(z) : ba_exp(z);
        case kSelu:
            if (z > A(0)) return order == 0 ? kSeluScale * z : (order == 1 ? kSeluScale : A(0));
            return kSeluScale * kSeluAlpha * (order == 0 ? ba_expm1(z) : ba_exp(z));
        case kSoftplus: {
            if (z > A(20)) return order == 0 ? z : (order == 1 ? A(1) : A(0));
            A s = ba_sigmoid(z);
            return order == 0 ? ba_log1p(ba_exp(z)) : (order == 1 ? s : s * (A(1) - s));
        }
        case kSwish: {
            A s = ba_sigmoid(z);
            if (order == 0) return z * s;
            if (order == 1) return s * (A(1) + z * (A(1) - s));
            return s * (A(1) - s) * (A(2) + z * (A(1) - A(2) * s));
        }
        default:  // linear
            return order == 0 ? z : (order == 1 ? A(1) : A(0));
    }
}

// One element. x, ref: the element of x / ref (ref unused in mode 0); b: its bias (0 if none);
// g1, g2: the incoming gradients (unused in mode 0; g2 only in mode 2).
template <typename A>
SG2KD_HD A bias_act_one(const BiasActParams& p, A x, A ref, A b, A g1, A g2) {
    const A alpha = static_cast<A>(p.alpha), gain = static_cast<A>(p.gain), clamp = static_cast<A>(p.clamp);
    if (p.mode == 0) {
        A v = ba_act(p.act, 0, x + b, alpha) * gain;
        if (clamp >= A(0)) v = v > clamp ? clamp : (v < -clamp ? -clamp : v);
        return v;
    }
    if (p.mode == 1 && p.ref_is_y) {
        // act' from the sign of y (linear: 1; relu: y > 0; lrelu: y > 0 ? 1 : alpha).
        A d = p.act == kLinear ? A(1) : (ref > A(0) ? A(1) : (p.act == kRelu ? A(0) : alpha));
        bool inside = clamp < A(0) || (ref < clamp && ref > -clamp);
        return inside ? g1 * d * gain : A(0);
    }
    A z = ref + b;
    if (clamp >= A(0)) {
        A v = ba_act(p.act, 0, z, alpha) * gain;
        if (!(v <= clamp && v >= -clamp)) return A(0);
    }
    A d = ba_act(p.act, p.mode, z, alpha) * gain;
    return p.mode == 1 ? g1 * d : g1 * g2 * d;
}

// Host-side launcher (defined in bias_act.cu for T in float, double, c10::Half, c10::BFloat16 with A
// double for double and float otherwise). Pointers other than x/out may be null when unused.
template <typename T, typename A>
int launch_bias_act(const BiasActParams& p, const T* x, const T* b, const T* ref, const T* g1, const T* g2,
                    T* out, void* stream);

}  // namespace sg2kd
